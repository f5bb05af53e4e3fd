"""The VQ-VAE's second stage: a learned prior over its frozen codes (model=vq_prior)."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from test_cli import read_metrics
from test_evaluate import run_module

from vae_zoo.blocks.likelihoods import Bernoulli
from vae_zoo.blocks.quantizers import VectorQuantizer
from vae_zoo.errors import ConfigError
from vae_zoo.models import VQVAE, LearnedPriorVQVAE
from vae_zoo.nets import CodeTransformer, ConvGridDecoder, ConvGridEncoder

from conftest import TINY_DATA, TINY_NET, TINY_RUN, run_cli, run_folders

TINY_PRIOR = ["model.prior.width=32", "model.prior.depth=2", "model.prior.heads=2", "model.prior.dropout=0.0"]


def tiny_vq_vae() -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(
        quantizer=VectorQuantizer(num_codes=16, code_dim=8),
        encoder=partial(ConvGridEncoder, hidden_channels=(8, 16), num_residual_blocks=1),
        decoder=partial(ConvGridDecoder, hidden_channels=(8, 16), num_residual_blocks=1),
        likelihood=Bernoulli(),
        image_channels=1,
        image_size=16,
        optimizer=partial(torch.optim.Adam, lr=1e-3),
    )


def tiny_two_stage(conditional: bool = False) -> LearnedPriorVQVAE:
    return LearnedPriorVQVAE(
        first_stage=tiny_vq_vae(),
        prior=partial(CodeTransformer, width=32, depth=2, heads=2, dropout=0.0),
        optimizer=partial(torch.optim.Adam, lr=3e-3),
        conditional=conditional,
        num_classes=3,
    )


# ------------------------------------------------------------------------------ the prior
@pytest.mark.parametrize("num_classes", [0, 3])
def test_the_prior_is_causal(num_classes):
    """Changing code j never changes the logits of positions 0..j (those predict codes 0..j from
    the codes before them), and does change a later position's."""
    torch.manual_seed(0)
    prior = CodeTransformer(num_codes=16, grid_size=4, num_classes=num_classes, width=32, depth=2, heads=2).eval()
    codes = torch.randint(0, 16, (2, 4, 4))
    labels = torch.tensor([0, 2]) if num_classes else None
    logits = prior(codes, labels)
    assert logits.shape == (2, 16, 16)
    for j in range(16):
        changed = codes.clone().flatten(1)
        changed[:, j] = (changed[:, j] + 1) % 16
        changed_logits = prior(changed.view(2, 4, 4), labels)
        torch.testing.assert_close(changed_logits[:, : j + 1], logits[:, : j + 1])
        if j < 15:
            assert (changed_logits[:, j + 1 :] - logits[:, j + 1 :]).abs().max() > 1e-4
    if num_classes:  # the label is seen from the first position on
        assert (prior(codes, torch.tensor([1, 1]))[:, 0] - logits[:, 0]).abs().max() > 1e-4


def test_sampling_is_seeded_and_consistent_with_the_logits():
    """Ancestral samples have the grid's shape, repeat under a seed, and each drawn code has the
    probability the logits give it (sampling and scoring are the same model)."""
    torch.manual_seed(0)
    prior = CodeTransformer(num_codes=16, grid_size=3, width=32, depth=1, heads=2).eval()
    first = prior.sample(5, generator=torch.Generator().manual_seed(1))
    assert first.shape == (5, 3, 3) and first.dtype == torch.long
    assert torch.equal(first, prior.sample(5, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(first, prior.sample(5, generator=torch.Generator().manual_seed(2)))
    # one-code model: with all probability on one code at each step, sampling must find it
    with torch.no_grad():
        prior.head.bias.fill_(-1e4)
        prior.head.bias[7] = 1e4
    assert (prior.sample(2, generator=torch.Generator().manual_seed(0)) == 7).all()


def test_terms_are_the_first_stage_recon_and_the_prior_nll_computed_by_hand():
    model = tiny_two_stage().eval()
    x = torch.bernoulli(torch.full((4, 1, 16, 16), 0.3), generator=torch.Generator().manual_seed(0))
    terms = model(x)
    vq = model.first_stage
    with torch.no_grad():
        quantized = vq.quantizer(vq.encoder(x))
        log_px_z = Bernoulli().log_prob(x, vq.decoder(quantized.z_q))
        codes = quantized.indices.flatten(1)
        logits = model.prior(quantized.indices)
    log_p_codes = torch.log_softmax(logits, dim=-1).gather(2, codes[..., None])[..., 0].sum(dim=1)  # (B,)
    torch.testing.assert_close(terms.log_px_z, log_px_z)
    torch.testing.assert_close(terms.kl_per_example_dim.sum(dim=1), -log_p_codes)
    torch.testing.assert_close(terms.elbo_per_example, log_px_z + log_p_codes)
    torch.testing.assert_close(terms.loss, -log_p_codes.mean())  # the objective: the prior's NLL only
    torch.testing.assert_close(terms.extras["uniform_prior_elbo"], (log_px_z - 16 * math.log(16)).mean())
    # a point-mass posterior: every importance weight is the ELBO
    weights = model.log_importance_weights(x, 3).log_weights
    torch.testing.assert_close(weights, terms.elbo_per_example[:, None].expand(-1, 3))


def test_only_the_prior_trains_and_its_nll_falls():
    """The first stage is frozen (weights, codebook and EMA statistics unchanged, kept in eval
    mode); the prior learns codes that follow a pattern well below log K per code."""
    model = tiny_two_stage().train()
    assert not model.first_stage.training and model.prior.training
    before = {name: t.clone() for name, t in model.first_stage.state_dict().items()}
    x = torch.zeros(16, 1, 16, 16)
    for i in range(16):
        x[i, 0, i % 8 : i % 8 + 4, 2:14] = 1
    optimizer = model.configure_optimizers()
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.prior.parameters()}
    first = model(x).kl.item()
    for _ in range(60):
        optimizer.zero_grad()
        model(x).loss.backward()
        optimizer.step()
    after = model(x).kl.item()
    assert after < 0.5 * first and after < 0.5 * 16 * math.log(16)
    for name, tensor in model.first_stage.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_conditional_prior_needs_labels_and_draws_per_class():
    model = tiny_two_stage(conditional=True).eval()
    x = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ConfigError, match="labels"):
        model.batch_terms({"image": x})
    terms = model.batch_terms({"image": x, "label": torch.tensor([0, 2])})
    assert terms.kl_per_example_dim.shape == (2, 16)
    draws = model.class_grid_sample(2, torch.Generator().manual_seed(0))
    assert draws["z"].shape == (6, 4, 4)
    assert model.generate(**draws).shape == (6, 1, 16, 16)


def test_a_first_stage_that_is_not_a_vq_vae_is_refused():
    with pytest.raises(ConfigError, match="not a VQ-VAE.*model=vq_vae"):
        LearnedPriorVQVAE(first_stage=torch.nn.Linear(2, 2), prior=CodeTransformer, optimizer=partial(torch.optim.Adam))


# ------------------------------------------------------------------------------ the CLI, two stages
VQ_RUN = [*TINY_DATA, "data.image_size=16", *TINY_NET["vq_vae"], *TINY_RUN, "trainer.max_epochs=3"]


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory) -> dict[str, Path]:
    """A VQ-VAE trained on the sprites from the CLI, then a learned prior over its codes."""
    workdir = tmp_path_factory.mktemp("vq_prior")
    result = run_cli(["model=vq_vae", *VQ_RUN, "hydra.run.dir=logs/vq"], cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    vq_run = workdir / "logs" / "vq"
    prior_args = [
        "model=vq_prior",
        f"model.first_stage.path={vq_run}",
        *TINY_DATA,
        "data.image_size=16",
        *TINY_PRIOR,
        *TINY_RUN,
        "trainer.max_epochs=4",
        "hydra.run.dir=logs/prior",
    ]
    result = run_cli(prior_args, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"workdir": workdir, "vq": vq_run, "prior": workdir / "logs" / "prior", "stdout": result.stdout}


def test_the_second_stage_trains_and_names_its_parent(two_stage):
    prior_run = two_stage["prior"]
    parent = json.loads((prior_run / "parent.json").read_text())
    assert parent["run_dir"] == str(two_stage["vq"].resolve())
    assert Path(parent["checkpoint"]).parent == two_stage["vq"].resolve() / "checkpoints"
    val = [row for row in read_metrics(prior_run) if row.get("val/elbo")]
    column = {key: [float(row[key]) for row in val] for key in ("val/elbo", "val/uniform_prior_elbo", "val/code_nll")}
    assert len(val) == 4 and (prior_run / "checkpoints" / "last.ckpt").is_file()
    # the learned prior beats the uniform one, and gets better with training
    assert all(learned > uniform for learned, uniform in zip(column["val/elbo"], column["val/uniform_prior_elbo"]))
    assert column["val/code_nll"][-1] < column["val/code_nll"][0] < math.log(16)
    assert len(set(column["val/uniform_prior_elbo"])) == 1  # the first stage is frozen
    for picture in ("prior_samples", "reconstructions", "interpolations", "codebook_usage"):
        assert (prior_run / "images" / f"{picture}_epoch0003.png").is_file(), picture
    assert "LearnedPriorVQVAE" in (prior_run / "train.log").read_text()


def test_sample_and_evaluate_use_the_learned_prior(two_stage):
    workdir, prior_run = two_stage["workdir"], two_stage["prior"]
    result = run_module("vae_zoo.sample", [f"ckpt_path={prior_run}", "num_samples=8"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (prior_run / "samples" / "prior_samples.png").is_file()
    args = [f"ckpt_path={prior_run}", "evaluate.fid=false", "evaluate.disentanglement=false"]
    result = run_module("vae_zoo.evaluate", args, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((prior_run / "evaluation" / "metrics.json").read_text())["metrics"]
    learned, uniform = metrics["elbo_learned_prior"]["value"], metrics["elbo_uniform_prior"]["value"]
    assert learned == pytest.approx(metrics["elbo"]["value"], rel=1e-6)
    assert learned > uniform
    assert metrics["elbo_gain_over_uniform"]["value"] == pytest.approx(learned - uniform, rel=1e-6)
    assert metrics["code_nll"]["value"] < math.log(16) == pytest.approx(metrics["code_nll"]["uniform"])
    assert metrics["prior_nll"]["value"] == pytest.approx(16 * metrics["code_nll"]["value"], rel=1e-6)
    assert metrics["code_nll"]["num_examples"] == 64 and metrics["code_nll"]["standard_error"] > 0


def test_training_batches_carry_the_cached_codes(two_stage):
    """The training split's codes are computed once, at the start of fit, and equal the first
    stage's codes of the same images."""
    from vae_zoo.models.vq_prior import CODES
    from vae_zoo.run.config import compose_config
    from vae_zoo.run.experiment import build

    overrides = ["model=vq_prior", f"model.first_stage.path={two_stage['vq']}", *TINY_DATA, "data.image_size=16"]
    experiment = build(compose_config([*overrides, *TINY_PRIOR], output_dir=two_stage["workdir"] / "cache"))
    datamodule, model = experiment.datamodule, experiment.model
    datamodule.setup("fit")
    model.cache_training_codes(datamodule)
    train = datamodule.splits["train"]
    cached = train[CODES]
    model.cache_training_codes(datamodule)
    assert train[CODES] is cached  # not recomputed
    images = train["image"][:20].float() / 255
    codes, _ = model.first_stage_codes(images)
    assert torch.equal(cached[:20].long(), codes)
    batch = next(iter(datamodule.train_dataloader()))
    assert CODES in batch and batch[CODES].shape == (32, 4, 4)


def test_a_run_that_is_not_a_vq_vae_is_refused_before_anything_is_written(two_stage, tmp_path):
    workdir = two_stage["workdir"]
    vae_run = [
        "model=vae",
        *TINY_DATA,
        "data.image_size=16",
        *TINY_NET["gaussian"],
        "model.encoder.hidden_channels=[8,8]",
    ]
    result = run_cli([*vae_run, *TINY_RUN, "trainer.max_epochs=1", "hydra.run.dir=logs/vae"], cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    target = tmp_path / "prior_of_a_vae"
    args = ["model=vq_prior", f"model.first_stage.path={workdir / 'logs' / 'vae'}", *TINY_DATA, "data.image_size=16"]
    result = run_cli([*args, f"hydra.run.dir={target}"], cwd=workdir)
    assert result.returncode != 0
    message = " ".join((result.stderr + result.stdout).split())
    assert "is a VAE" in message and "not a VQ-VAE" in message and "model=vq_vae" in message
    # nothing but the folder's lock, taken before anything is built, and empty once released
    assert not target.exists() or [(p.name, p.stat().st_size) for p in target.iterdir()] == [(".lock", 0)]
    assert len(run_folders(workdir / "logs")) == 0  # nothing under the default runs folder either


def test_the_first_stage_must_be_named(tmp_path):
    result = run_cli(["model=vq_prior", *TINY_DATA, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode != 0 and "model.first_stage.path=<run folder or checkpoint>" in result.stderr


def test_a_run_file_cannot_trust_more_for_its_first_stage_than_the_command_line(two_stage):
    """A second stage's config.yaml carries the trusted targets its first stage is built with:
    an edited one that trusts more than the command line is refused before anything is built."""
    from omegaconf import OmegaConf

    from vae_zoo.errors import UntrustedFileError
    from vae_zoo.evaluation.runner import evaluate
    from vae_zoo.run.run_config import compose_run_config

    prior_run = two_stage["prior"]
    edited = prior_run.parent / "edited_prior"
    edited.mkdir()
    (edited / "checkpoints").symlink_to(prior_run / "checkpoints")
    config = OmegaConf.load(prior_run / "config.yaml")
    config.model.first_stage.trusted_targets = ["os"]
    (edited / "config.yaml").write_text(OmegaConf.to_yaml(config))
    cfg = compose_run_config(edited, ["evaluate.fid=false"], output_dir=edited / "evaluation")
    with pytest.raises(
        UntrustedFileError, match=r"model.first_stage.trusted_targets trusts os.*trusted_targets=\[os\]"
    ):
        evaluate(cfg)
    assert not (edited / "evaluation").exists()
