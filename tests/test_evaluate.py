"""Evaluate, sample and compare, as a user runs them: on a real (tiny) 2-run multirun.

One sweep (β-VAE, model.beta=1,4, one epoch on tiny 32x32 sprites) is trained once for the
module; the entry points then run on its run folders as subprocesses.
"""

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from vae_zoo.errors import ConfigError
from vae_zoo.evaluation.runner import evaluate
from vae_zoo.metrics import ClassifierFeatureExtractor, FeatureExtractorUnavailableError
from vae_zoo.run.config import compose_config
from vae_zoo.run.run_config import compose_run_config, register_run_config_from_argv

from conftest import TINY_DATA, TINY_NET, TINY_SPRITES, run_cli, run_command

ONE_EPOCH = [arg for arg in TINY_SPRITES if not arg.startswith("trainer.max_epochs")] + [
    "trainer.max_epochs=1",
    "trainer.num_sanity_val_steps=0",
]
CLASSIFIER_FID = ["feature_extractor._target_=vae_zoo.metrics.fid.ClassifierFeatureExtractor.from_checkpoint"]
QUICK_DISENTANGLEMENT = [  # fewer votes and trees than the published settings: a test, not a paper
    "evaluate.factor_vae.group_size=16",
    "evaluate.factor_vae.num_train=300",
    "evaluate.factor_vae.num_eval=200",
    "evaluate.dci.classifier.n_estimators=5",
]


def run_module(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m <module> args`` as a user would run it (its ``main()``, in this process:
    :func:`conftest.run_command`)."""
    return run_command(module, args, cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("evaluate")


@pytest.fixture(scope="module")
def sweep(workdir) -> Path:
    """A 2-run multirun folder (model.beta=1,4)."""
    result = run_cli(["-m", "model=beta_vae", "model.beta=1,4", *ONE_EPOCH], cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    [folder] = (workdir / "logs" / "train" / "multiruns").glob("*")
    return folder


@pytest.fixture(scope="module")
def extractor_checkpoint(workdir) -> Path:
    """A tiny FID feature extractor made as the README says: ``python -m vae_zoo.fid_classifier``
    on the run's data (its labels: the sprites' shapes)."""
    path = workdir / "classifier.pt"
    data = [arg for arg in TINY_DATA]
    result = run_module(
        "vae_zoo.fid_classifier",
        ["data=sprites", *data, f"path={path}", "epochs=1", "num_features=16", "hidden_channels=[8,16]"],
        workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote {path}" in result.stdout and "test accuracy" in result.stdout
    return path


def test_fid_classifier_command_learns_the_labels(tmp_path, mnist_root):
    """The classifier command trains on the data's labels and says how well it does; the file
    it writes is what evaluate's feature_extractor loads."""
    path = tmp_path / "mnist_classifier.pt"
    result = run_module(
        "vae_zoo.fid_classifier",
        [f"data.root={mnist_root}", "data.download=false", "data.val_size=50", f"path={path}", "epochs=15"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = float(result.stdout.split("test accuracy ")[1].split("%")[0]) / 100
    assert accuracy >= 0.9  # the fixture's classes are learnable bars; chance is 0.1
    assert "+feature_extractor.path=" + str(path) in result.stdout
    extractor = ClassifierFeatureExtractor.from_checkpoint(path)
    assert extractor.num_features == 64 and extractor(torch.rand(2, 1, 28, 28)).shape == (2, 64)


@pytest.fixture(scope="module")
def evaluated(sweep, extractor_checkpoint, workdir):
    """``python -m vae_zoo.evaluate`` on the first run: everything that applies to sprites."""
    run = sweep / "0"
    args = [
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "evaluate.num_importance_samples=50",
        "evaluate.nll_max_examples=32",
        *CLASSIFIER_FID,
        f"+feature_extractor.path={extractor_checkpoint}",
        *QUICK_DISENTANGLEMENT,
        "evaluate.ood.classes=[2]",
    ]
    result = run_module("vae_zoo.evaluate", args, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def test_evaluate_writes_metrics_in_consistent_units(evaluated, extractor_checkpoint):
    run, result = evaluated
    report = json.loads((run / "evaluation" / "metrics.json").read_text())
    metrics = {name: entry["value"] for name, entry in report["metrics"].items()}
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    assert report["num_examples"] == 64 and report["split"] == "test" and report["model"] == "BetaVAE"
    data_dim = report["data_dim"]
    assert data_dim == 32 * 32
    # nats per example, and bits/dim = nats / (D ln 2)
    assert metrics["elbo"] == pytest.approx(-(metrics["recon"] + metrics["kl"]), rel=1e-6)  # float32 sums
    assert metrics["bits_per_dim"] == pytest.approx(-metrics["elbo"] / (data_dim * math.log(2)), rel=1e-9)
    assert metrics["nll_bits_per_dim"] == pytest.approx(metrics["nll"] / (data_dim * math.log(2)), rel=1e-9)
    nll = report["metrics"]["nll"]
    assert (nll["k"], nll["num_examples"]) == (50, 32)
    # the IWAE bound is at least the ELBO of the same examples (up to Monte Carlo noise)
    assert -nll["value"] >= nll["elbo_same_examples"] - 1e-3 * abs(nll["elbo_same_examples"])
    # the same weights and test data as training's own test step (one sample per example each)
    with open(run / "csv" / "metrics.csv") as f:
        test_elbo = [float(row["test/elbo"]) for row in csv.DictReader(f) if row.get("test/elbo")][-1]
    assert metrics["elbo"] == pytest.approx(test_elbo, rel=0.02)
    assert 0 <= metrics["active_units"] <= 4
    assert metrics["mse"] >= 0 and 0 <= metrics["ssim"] <= 1
    # sprites carry factors: disentanglement scores in [0, 1]
    for name in ("mig", "factor_vae", "dci_disentanglement", "dci_completeness", "dci_informativeness"):
        assert 0 <= metrics[name] <= 1, name
    # FID with the configured extractor, recorded with the extractor and the sample counts
    for name in ("fid_prior", "fid_recon"):
        fid = report["metrics"][name]
        assert fid["value"] >= 0
        assert extractor_checkpoint.name in fid["feature_extractor"]
        assert (fid["num_real"], fid["num_fake"], fid["num_features"]) == (64, 64, 16)
    assert 0 <= metrics["ood_auroc"] <= 1 and 0 <= metrics["ood_auprc"] <= 1
    assert report["metrics"]["ood_auroc"]["num_in"] + report["metrics"]["ood_auroc"]["num_out"] == 64
    markdown = (run / "evaluation" / "metrics.md").read_text()
    assert "| nll |" in markdown and "nats/example" in markdown and "| mig |" in markdown
    assert "vae_zoo evaluation" in result.stdout and "fid_prior" in result.stdout


def test_missing_checkpoint_is_a_one_line_error(workdir):
    result = run_module(
        "vae_zoo.evaluate", [f"ckpt_path={workdir / 'nowhere.ckpt'}", "data.eval_batch_size=8"], workdir
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: No checkpoint at") and "nowhere.ckpt" in lines[0]


def test_sample_writes_prior_samples_interpolations_and_traversals(sweep, workdir):
    run = sweep / "1"
    args = [f"ckpt_path={run}", "num_samples=6", "nrow=3", "interpolations.num_pairs=2", "traversals.num_dims=3"]
    result = run_module("vae_zoo.sample", args, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    cell = 32 + 2  # 32 px images, 2 px padding
    expected = {"prior_samples": (3, 2), "interpolations": (10, 2), "traversals": (9, 3)}  # (columns, rows)
    for name, (columns, rows) in expected.items():
        assert Image.open(run / "samples" / f"{name}.png").size == (columns * cell + 2, rows * cell + 2), name


def test_compare_tables_and_plots_the_sweep(sweep, evaluated, workdir):
    result = run_module("vae_zoo.compare", [str(sweep)], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["run"], row["model.beta"]) for row in rows] == [("0", "1"), ("1", "4")]
    assert all(row["val/recon"] and row["val/kl"] and row["test/elbo"] for row in rows)
    assert "val/kl_dim/0" not in rows[0]  # per-dimension KL stays in the run's own CSV
    assert rows[0]["eval/mig"] and not rows[1]["eval/mig"]  # only run 0 was evaluated
    markdown = (sweep / "comparison.md").read_text()
    assert markdown.startswith("| run | model.beta |") and "eval/mig" in markdown
    width, height = Image.open(sweep / "comparison.png").size
    assert width > 3 * height  # three panels side by side: val/recon, val/kl, eval/mig


def test_overrides_apply_on_top_of_the_trained_config(sweep, tmp_path):
    run = sweep / "0"
    cfg = compose_run_config(run, ["data.eval_batch_size=16", "evaluate.num_importance_samples=7"], output_dir=tmp_path)
    assert cfg.data.eval_batch_size == 16 and cfg.evaluate.num_importance_samples == 7
    assert cfg.model.beta == 1.0 and cfg.model.latent_dim == 4  # as trained
    assert cfg.ckpt_path.endswith("last.ckpt") or "best-" in cfg.ckpt_path  # a run folder: its best checkpoint
    with pytest.raises(Exception, match="data.rot"):  # a typo is refused, as in training
        compose_run_config(run, ["data.rot=/x"], output_dir=tmp_path)


def test_offline_inception_fails_before_any_work_and_names_the_alternatives(sweep, tmp_path, monkeypatch):
    monkeypatch.setattr("vae_zoo.metrics.fid._TORCH_FIDELITY_AVAILABLE", False)
    cfg = compose_run_config(sweep / "0", ["evaluate.fid=true"], output_dir=tmp_path)  # FID required
    with pytest.raises(FeatureExtractorUnavailableError, match="evaluate.fid=false") as error:
        evaluate(cfg)
    assert "ClassifierFeatureExtractor.from_checkpoint" in str(error.value)
    assert not (tmp_path / "metrics.json").exists()


def test_by_default_evaluate_works_offline_and_says_why_fid_was_skipped(sweep, tmp_path, monkeypatch):
    monkeypatch.setattr("vae_zoo.metrics.fid._TORCH_FIDELITY_AVAILABLE", False)  # as without Inception's weights
    overrides = ["evaluate.num_importance_samples=4", "evaluate.disentanglement=false"]
    report = evaluate(compose_run_config(sweep / "0", overrides, output_dir=tmp_path))
    assert "fid_prior" not in report.metrics and "elbo" in report.metrics
    reason = report.skipped["fid"]
    assert "no feature extractor available" in reason and "torch-fidelity" in reason and "evaluate.fid=true" in reason
    assert (tmp_path / "metrics.json").is_file()


def test_checkpoint_argument_is_checked_before_hydra_runs(tmp_path):
    with pytest.raises(ConfigError, match="one checkpoint per call"):
        register_run_config_from_argv(["ckpt_path=a.ckpt,b.ckpt"])
    with pytest.raises(ConfigError, match="ckpt_path="):
        register_run_config_from_argv(["evaluate.fid=false"])
    register_run_config_from_argv(["--help"])  # help needs no checkpoint
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").touch()
    with pytest.raises(ConfigError, match="No config.yaml"):
        register_run_config_from_argv([f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"])


def test_vq_vae_gets_codebook_and_reconstruction_metrics_and_skips_gaussian_ones(tmp_path):
    """An (untrained) VQ-VAE run folder written by hand: its config and a checkpoint."""
    run = tmp_path / "run"
    train_cfg = compose_config(["model=vq_vae", *TINY_DATA, *TINY_NET["vq_vae"]], output_dir=run)
    (run / "checkpoints").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(OmegaConf.to_container(train_cfg, resolve=True)), run / "config.yaml")
    from vae_zoo.run.experiment import instantiate

    torch.save({"state_dict": instantiate(train_cfg.model).state_dict()}, run / "checkpoints" / "last.ckpt")
    overrides = ["evaluate.fid=false", "evaluate.max_examples=32"]  # the sprites have factors: disentanglement is asked
    report = evaluate(compose_run_config(run, overrides, output_dir=tmp_path / "out"))
    assert "score the dimensions of a Gaussian code" in report.skipped["disentanglement"]
    assert report.metrics["kl"]["value"] == pytest.approx(8 * 8 * math.log(16))  # log K per latent position
    assert 1 <= report.metrics["perplexity"]["value"] <= 16
    assert 0 <= report.metrics["unused_codes"]["value"] <= 16 and "dead_codes" in report.metrics
    assert {"mse", "psnr", "ssim", "elbo", "bits_per_dim"} <= set(report.metrics)
    assert "deterministic categorical posterior" in report.skipped["nll"] and "active_units" in report.skipped
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["skipped"]["nll"] == report.skipped["nll"]


def test_a_metric_of_your_own_through_config_alone(sweep, tmp_path):
    """A user adds a metric with one config entry (and trusts their module); one that does not
    apply says why in one line; a listed metric set to null is gone from the report."""
    overrides = [
        "evaluate.fid=false",
        "evaluate.disentanglement=false",
        "metrics.nll=null",
        "+metrics.mean_intensity={_target_: custom_metrics.MeanIntensity}",
        "+metrics.colour={_target_: custom_metrics.NeedsLabelsItHasNot}",
        "trusted_targets=[custom_metrics]",
    ]
    report = evaluate(compose_run_config(sweep / "0", overrides, output_dir=tmp_path))
    cfg = compose_config(["model=beta_vae", *ONE_EPOCH])  # the run's own data, built another way
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    expected = datamodule.splits["test"]["image"].double().mean().item() / 255
    assert report.metrics["mean_intensity"]["value"] == pytest.approx(expected, rel=1e-9)
    assert report.skipped["needs_colour"] == "the images are grey"
    assert report.skipped["codebook_usage"] == "BetaVAE has no codebook"
    assert "nll" not in report.metrics and "nll" not in report.skipped
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["metrics"]["mean_intensity"]["value"] == report.metrics["mean_intensity"]["value"]
    # without trusting the module, the same config is refused before anything runs
    with pytest.raises(Exception, match="custom_metrics"):
        evaluate(compose_run_config(sweep / "0", overrides[:-1], output_dir=tmp_path / "refused"))


def test_evaluate_loads_the_model_in_its_training_layout_and_says_how_far_the_nll_is(trained_run, tmp_path, caplog):
    import logging

    from vae_zoo.run.run_config import load_run

    overrides = ["evaluate.fid=false", "evaluate.num_importance_samples=3", "evaluate.disentanglement=false"]
    cfg = compose_run_config(trained_run, overrides, output_dir=tmp_path / "eval")
    loaded = load_run(cfg, torch.device("cpu"))
    assert cfg.channels_last and loaded.model.encoder.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    with caplog.at_level(logging.INFO, logger="vae_zoo.metrics.progress"):
        evaluate(cfg)
    lines = [record.getMessage() for record in caplog.records if record.name == "vae_zoo.metrics.progress"]
    assert any(line.startswith("Importance-sampled NLL, k=3, 64 examples: 100% (192 of 192 decodes)") for line in lines)
    assert "left" in lines[0]


def test_the_nll_can_be_estimated_with_a_bf16_decoder_and_says_so(trained_run, tmp_path):
    overrides = ["evaluate.fid=false", "evaluate.num_importance_samples=20", "evaluate.disentanglement=false"]
    exact = evaluate(compose_run_config(trained_run, overrides, output_dir=tmp_path / "fp32"))
    fast = evaluate(
        compose_run_config(trained_run, [*overrides, "evaluate.nll_precision=bf16"], output_dir=tmp_path / "bf16")
    )
    saved = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert saved["metrics"]["nll"]["decoder_precision"] == "bf16" and exact.metrics["nll"]["decoder_precision"] == "32"
    # the same draws: well inside the estimate's own Monte Carlo error
    assert abs(fast.metrics["nll"]["value"] - exact.metrics["nll"]["value"]) < exact.metrics["nll"]["standard_error"]
    with pytest.raises(ConfigError, match="evaluate.nll_precision must be one of 32, bf16"):
        evaluate(
            compose_run_config(trained_run, [*overrides, "evaluate.nll_precision=fp16"], output_dir=tmp_path / "x")
        )
