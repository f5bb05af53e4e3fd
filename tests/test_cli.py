"""The command line as a user runs it: a real (tiny) run end to end, and bad input."""

import csv
from pathlib import Path

import pytest
import yaml
from PIL import Image

from vae_zoo.support.checkpoint_files import load_checkpoint

from conftest import TINY_SPRITES, run_cli, run_folders


def read_metrics(run: Path) -> list[dict]:
    with open(run / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_default_pipeline_end_to_end(tmp_path):
    # in a fresh interpreter: what a user's console shows (each warning once, no noise) is per process
    result = run_cli(TINY_SPRITES, cwd=tmp_path, process=True)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path / "logs")
    # resolved config, checkpoints (last + best by val/elbo), metrics CSV, PNG grids
    config = (run / "config.yaml").read_text()
    assert "${" not in config and "latent_dim: 4" in config
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and any(name.startswith("best-") for name in checkpoints)
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")  # weights_only: our checkpoints need nothing else
    assert last["global_step"] == 2 * 8 and last["epoch"] == 1
    epochs = [row for row in read_metrics(run) if row.get("val/elbo")]
    assert [int(row["epoch"]) for row in epochs] == [0, 1]
    for row in epochs:  # the identity the contract promises, in nats per example
        elbo, recon, kl = (float(row[k]) for k in ("val/elbo", "val/recon", "val/kl"))
        assert abs(elbo + recon + kl) < 1e-3 * abs(elbo)
        assert abs(kl - sum(float(row[f"val/kl_dim/{i}"]) for i in range(4))) < 1e-3 + 1e-3 * kl
    for epoch in (0, 1):
        for kind in ("reconstructions", "prior_samples"):
            image = Image.open(run / "images" / f"{kind}_epoch{epoch:04d}.png")
            # 8 images of 32 px in rows of 4 (+2 px padding); reconstructions: inputs + outputs
            rows = 4 if kind == "reconstructions" else 2
            assert image.size == (4 * 34 + 2, rows * 34 + 2)
    assert "vae_zoo run summary" in result.stdout and "test/elbo" in result.stdout
    # callbacks.progress_bar=null (TINY_RUN) means plain logs: no progress bar of any kind
    assert "it/s" not in result.stdout + result.stderr and "Epoch 0/" not in result.stdout + result.stderr
    # Lightning's messages known not to apply are silenced (vae_zoo.run.console), one by one; the
    # model summary is our one line, not a table whose FLOPs column is all 0
    console = result.stdout + result.stderr
    for noise in ("LeafSpec", "litlogger", "does not have many workers", "sync_dist", "FLOPs", "INFO:", "[lightning."):
        assert noise not in console, noise
    assert console.count("GPU available") == 1  # each Lightning message once (not also via the root logger)
    assert "VAE: " in console and "trainable parameters (encoder" in console
    # the summary is complete, and train.log holds the whole console, in plain text
    for line in ("run folder:", "best checkpoint:", "last checkpoint:", "images:"):
        assert line in result.stdout, line
    log = (run / "train.log").read_text()
    for line in (
        "Seed set to 0",
        "GPU available",
        "Batch size 32 per device",
        "vae_zoo run summary",
        "test/elbo",
        "last checkpoint:",
    ):
        assert line in log, line
    assert "\x1b" not in log


VARIANTS = ["vae", "beta_vae", "cvae", "vq_vae"]
OBJECTIVES = ["iwae", "beta_tcvae", "factor_vae", "dip_vae"]  # the objective family on the opened base
QUICK = [
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "callbacks.progress_bar=null",
    "callbacks.reconstructions.num_images=8",
    "callbacks.prior_samples.num_images=8",
]


def check_variant_runs(log_dir: Path, variants: list[str] = VARIANTS) -> None:
    [sweep] = sorted((log_dir / "train" / "multiruns").glob("*"))
    for job, model in enumerate(variants):
        run = sweep / str(job)
        assert f"model: {model}" in (run / ".hydra" / "overrides.yaml").read_text().replace("- model=", "model: ")
        for kind in ("reconstructions", "prior_samples", "interpolations"):
            assert (run / "images" / f"{kind}_epoch0000.png").is_file()
        specific = {"cvae": "class_conditional", "vq_vae": "codebook_usage"}.get(model, "traversals")
        assert (run / "images" / f"{specific}_epoch0000.png").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        rows = read_metrics(run)
        logged = {key for row in rows for key, value in row.items() if value}
        assert {"val/elbo", "val/recon", "val/kl", "test/elbo", "train/loss"} <= logged
        if model == "vq_vae":
            assert {"val/perplexity", "val/dead_codes", "val/commitment_loss"} <= logged
            assert "val/kl_dim/0" not in logged  # constant log K: not logged per position
        else:
            assert "val/kl_dim/0" in logged
            assert ("train/beta" in logged) == (model != "iwae")  # IWAE's bound has no KL weight to log
        if model == "beta_vae":  # β = 4 under the data's KL warm-up: β·min(1, step / warmup_steps) at each step
            warmup = yaml.safe_load((run / "config.yaml").read_text())["model"]["kl_schedule"]["warmup_steps"]
            assert warmup in (1500, 3000)  # the sprites' and MNIST's
            betas = [(int(row["step"]), float(row["train/beta"])) for row in rows if row.get("train/beta")]
            assert betas and all(abs(beta - 4.0 * min(1.0, step / warmup)) < 1e-6 for step, beta in betas), betas


@pytest.mark.slow
def test_every_variant_trains_on_the_default_data(tmp_path):
    sizes = ["data.num_train=256", "data.num_val=64", "data.num_test=64"]
    result = run_cli(["-m", f"model={','.join(VARIANTS)}", *sizes, *QUICK, "trainer.log_every_n_steps=1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    check_variant_runs(tmp_path / "logs")


def test_every_objective_trains_from_the_cli_with_the_vae_s_pictures(tmp_path):
    # FactorVAE keeps its default discriminator (3 x 1000 units): small next to the conv nets
    sizes = ["data.num_train=256", "data.num_val=64", "data.num_test=64"]
    result = run_cli(
        ["-m", f"model={','.join(OBJECTIVES)}", *sizes, *QUICK, "trainer.log_every_n_steps=1"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check_variant_runs(tmp_path / "logs", OBJECTIVES)


def test_every_variant_trains_on_mnist_files(tmp_path, mnist_root):
    mnist = [
        "data=mnist",
        f"paths.data_dir={mnist_root}",
        "data.download=false",
        "data.val_size=100",
        "data.binarize=dynamic",
    ]
    result = run_cli(["-m", f"model={','.join(VARIANTS)}", *mnist, *QUICK, "trainer.log_every_n_steps=1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    check_variant_runs(tmp_path / "logs")


def test_unknown_model_lists_available_names(tmp_path):
    result = run_cli(["model=not_a_model"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'model/not_a_model'" in result.stderr
    assert "Available options in 'model'" in result.stderr and "vae" in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing ran


def test_unknown_data_lists_available_names(tmp_path):
    result = run_cli(["data=imagenet21k"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'data/imagenet21k'" in result.stderr
    assert "mnist" in result.stderr and "sprites" in result.stderr


def test_missing_data_files_fail_before_the_model_is_built(tmp_path):
    empty = tmp_path / "empty"
    result = run_cli(["data=mnist", f"data.root={empty}", "data.download=false"], cwd=tmp_path)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())  # rich may wrap long lines
    assert "error:" in message and "train-images-idx3-ubyte.gz" in message
    assert str(empty.resolve() / "MNIST" / "raw") in message
    assert "Traceback" not in result.stderr
    [run] = run_folders(tmp_path / "logs")
    assert not (run / "checkpoints").exists() and not (run / "csv").exists()


def test_image_size_the_net_cannot_take_fails_before_training(tmp_path):
    result = run_cli([*TINY_SPRITES, "data.image_size=4"], cwd=tmp_path)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "cannot take 4x4 images" in message and "data.image_size >= 8" in message
    [run] = run_folders(tmp_path / "logs")
    assert not (run / "checkpoints").exists()


def test_model_built_for_other_images_than_the_data_fails(tmp_path):
    result = run_cli([*TINY_SPRITES, "model.image_size=64"], cwd=tmp_path)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "serves 1x32x32 images" in message and "built for 1x64x64" in message


def test_help_and_cfg_job_import_neither_torch_nor_lightning(tmp_path):
    """Hydra answers --help and --cfg job from the configs: the entry points import torch and
    Lightning only inside the task (start-up figures: BENCHMARKS.md)."""
    import subprocess
    import sys

    for flag in (["--help"], ["--cfg", "job"]):
        code = (
            "import runpy, sys\n"
            f"sys.argv = ['vae_zoo.train', *{flag!r}]\n"
            "try:\n    runpy.run_module('vae_zoo.train', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'torchmetrics') if m in sys.modules))\n"
        )
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "HEAVY []" in result.stdout, (flag, result.stdout[-500:])
