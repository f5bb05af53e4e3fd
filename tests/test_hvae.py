"""The hierarchical (ladder) VAE: per-layer KL, the ELBO by hand, ancestral samples, CLI, resume, DDP."""

from __future__ import annotations

import json
import math
from functools import partial

import pytest
import torch
from test_cli import read_metrics
from test_evaluate import run_module
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Normal, kl_divergence

from vae_zoo.blocks.likelihoods import Bernoulli
from vae_zoo.errors import ConfigError
from vae_zoo.models import HierarchicalVAE
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train

from conftest import TINY_DATA, TINY_RUN, run_cli, run_folders

TINY_HVAE = ["model=hvae", "model.latent_dims=[4,3]", "model.hidden=[32,16]", "kl_schedule=constant"]


def tiny_hvae(norm: str = "none", layers: int = 3) -> HierarchicalVAE:
    torch.manual_seed(0)
    return HierarchicalVAE(
        latent_dims=[5, 4, 3][:layers],
        hidden=[24, 16, 8][:layers],
        norm=norm,
        likelihood=Bernoulli(),
        image_channels=1,
        image_size=8,
        optimizer=partial(torch.optim.Adam, lr=3e-3),
    )


def images(n: int = 6) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.4), generator=torch.Generator().manual_seed(0))


def normal(gaussian) -> Normal:
    return Normal(gaussian.mu, torch.exp(0.5 * gaussian.logvar))


@pytest.mark.parametrize("norm", ["none", "batch", "weight"])
def test_each_layers_kl_matches_torch_distributions(norm):
    model = tiny_hvae(norm).eval()
    x = images()
    layers = model.walk_top_down(len(x), model.bottom_up_gaussians(x))
    assert [layer.z.shape[1] for layer in layers] == [5, 4, 3]
    for layer in layers:
        expected = kl_divergence(normal(layer.posterior), normal(layer.prior))
        torch.testing.assert_close(layer.posterior.kl_to(layer.prior), expected)
    torch.manual_seed(1)
    terms = model(x)
    torch.manual_seed(1)  # the same path again: the layer KLs the terms report are those of the path
    layers = model.walk_top_down(len(x), model.bottom_up_gaussians(x))
    for i, layer in enumerate(layers):
        expected = kl_divergence(normal(layer.posterior), normal(layer.prior)).sum(dim=1).mean()
        torch.testing.assert_close(terms.extras[f"kl_layer/{i + 1}"], expected)
    torch.testing.assert_close(terms.kl, sum(terms.extras[f"kl_layer/{i}"] for i in (1, 2, 3)))
    top = layers[-1].prior  # p(z_L) is N(0, I)
    assert torch.equal(top.mu, torch.zeros_like(top.mu)) and torch.equal(top.logvar, torch.zeros_like(top.logvar))


def test_log_weights_are_log_p_x_z_minus_log_q_by_hand_and_the_elbo_is_their_mean():
    """log w = log p(x | z_1) + sum_l log p(z_l | z_l+1) - sum_l log q(z_l | z_l+1, x), computed here
    with torch.distributions from the model's own layer parameters for the same path; and the
    analytic-KL ELBO equals the mean of many log weights (Monte Carlo, within 4 standard errors)."""
    model = tiny_hvae().eval()
    x = images(3)
    generator = torch.Generator().manual_seed(0)
    samples = model.log_importance_weights(x, 2, generator=generator)
    generator = torch.Generator().manual_seed(0)
    noise = torch.cat([torch.randn(3, model.latent_dim, generator=generator) for _ in range(2)])
    bottom_up = model.bottom_up_gaussians(x.repeat(2, 1, 1, 1))
    by_hand, z_above = torch.zeros(6), None
    for i in reversed(range(3)):
        size = model.latent_dims[i]
        eps = noise.split(model.latent_dims, dim=1)[i]
        if z_above is None:
            prior = Normal(torch.zeros(6, size), torch.ones(6, size))
            post_mu, post_var = bottom_up[i].mu, torch.exp(bottom_up[i].logvar)
        else:
            mu_p, logvar_p = model.prior_heads[i](model.top_down[i](z_above)).chunk(2, dim=1)
            prior = Normal(mu_p, torch.exp(0.5 * logvar_p))
            precision = 1 / torch.exp(bottom_up[i].logvar) + 1 / torch.exp(logvar_p)
            post_var = 1 / precision
            post_mu = post_var * (bottom_up[i].mu / torch.exp(bottom_up[i].logvar) + mu_p / torch.exp(logvar_p))
        z = post_mu + post_var.sqrt() * eps
        by_hand += prior.log_prob(z).sum(1) - Normal(post_mu, post_var.sqrt()).log_prob(z).sum(1)
        z_above = z
    logits = model.decoder(z_above)
    by_hand += TorchBernoulli(logits=logits).log_prob(x.repeat(2, 1, 1, 1)).flatten(1).sum(1)
    torch.testing.assert_close(samples.log_weights, by_hand.reshape(2, 3).t(), rtol=1e-4, atol=1e-4)
    # E_q[log w] = ELBO with analytic KLs
    many = model.log_importance_weights(x, 4000, generator=torch.Generator().manual_seed(1)).log_weights.double()
    torch.manual_seed(2)
    elbo = torch.stack([model(x).elbo_per_example for _ in range(400)]).double().mean(0)
    standard_error = many.std(dim=1) / math.sqrt(4000)
    assert ((many.mean(dim=1) - elbo).abs() < 4 * standard_error + 0.05).all()


def test_ancestral_samples_have_the_right_shape_and_repeat_under_a_seed():
    model = tiny_hvae("batch").eval()
    first = model.sample(7, torch.Generator().manual_seed(3))
    assert first.shape == (7, 1, 8, 8) and float(first.min()) >= 0 and float(first.max()) <= 1
    assert torch.equal(first, model.sample(7, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, model.sample(7, torch.Generator().manual_seed(4)))
    # the top layer decides: with the same z_L and every lower layer at its prior mean, images repeat
    code = model.latent_code(images(2))
    assert code.shape == (2, 12)
    torch.testing.assert_close(
        model.decode_latent(code), model.decode_latent(code + torch.cat([torch.ones(2, 9), torch.zeros(2, 3)], 1))
    )


def test_dreg_is_refused_rather_than_ignored(tmp_path):
    model = tiny_hvae()
    with pytest.raises(ConfigError, match="no DReG estimator"):
        model.log_importance_weights(images(), 3, stop_posterior_gradient=True)
    assert model.log_importance_weights(images(), 3).log_weights.shape == (6, 3)
    from vae_zoo.run.config import compose_config
    from vae_zoo.run.experiment import build

    with pytest.raises(ConfigError, match=r"model builds vae_zoo\.models\.hvae\.HierarchicalVAE .*'dreg'"):
        build(compose_config([*TINY_HVAE, "+model.dreg=true"], output_dir=tmp_path))


def test_bad_layer_settings_are_refused():
    with pytest.raises(ConfigError, match="one positive size per layer"):
        HierarchicalVAE(
            latent_dims=[4, 2], hidden=[8], likelihood=Bernoulli(), image_channels=1, image_size=8, optimizer=None
        )
    with pytest.raises(ConfigError, match="model.norm"):
        HierarchicalVAE(
            latent_dims=[4],
            hidden=[8],
            norm="layer",
            likelihood=Bernoulli(),
            image_channels=1,
            image_size=8,
            optimizer=None,
        )


def test_a_two_layer_model_trains_from_the_cli_and_logs_each_layer(tmp_path, mnist_root):
    args = [*TINY_HVAE, "data=mnist", f"data.root={mnist_root}", "data.download=false", "data.binarize=dynamic"]
    args += ["data.val_size=60", "data.batch_size=32", *TINY_RUN, "trainer.max_epochs=3"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path / "logs")
    val = [row for row in read_metrics(run) if row.get("val/elbo")]
    assert float(val[-1]["val/elbo"]) > float(val[0]["val/elbo"])  # it learns
    for row in val:
        total = float(row["val/kl_layer/1"]) + float(row["val/kl_layer/2"])
        assert total == pytest.approx(float(row["val/kl"]), rel=1e-4)
        per_layer = [float(row[f"val/active_units_layer/{layer}"]) for layer in ("1", "2")]
        assert per_layer[0] <= 4 and per_layer[1] <= 3 and sum(per_layer) == float(row["val/active_units"])
    for picture in ("prior_samples", "traversals", "interpolations", "kl_per_dim", "reconstructions"):
        assert (run / "images" / f"{picture}_epoch0002.png").is_file(), picture
    assert "test/elbo" in result.stdout
    # evaluate: the IS-NLL through the model's own log weights, a tighter bound than the ELBO
    args = [f"ckpt_path={run}", "evaluate.num_importance_samples=50", "evaluate.fid=false"]
    result = run_module("vae_zoo.evaluate", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())["metrics"]
    assert metrics["nll"]["value"] <= -metrics["nll"]["elbo_same_examples"] + 0.5
    assert metrics["nll"]["k"] == 50 and metrics["active_units"]["of"] == 7
    result = run_module("vae_zoo.sample", [f"ckpt_path={run}", "num_samples=4", "traversals.num_dims=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "samples" / "traversals.png").is_file()


def test_resume_reaches_the_same_metrics_as_an_uninterrupted_run(tmp_path):
    overrides = [*TINY_DATA, *TINY_HVAE, "model.norm=batch", *TINY_RUN, "test=false"]
    straight = train(compose_config([*overrides, "trainer.max_epochs=3"], output_dir=tmp_path / "straight"))
    train(compose_config([*overrides, "trainer.max_epochs=1"], output_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = train(
        compose_config([*overrides, "trainer.max_epochs=3", f"ckpt_path={last}"], output_dir=tmp_path / "resumed")
    )
    for key in ("val/elbo", "val/kl_layer/1", "val/kl_layer/2"):
        assert resumed.metrics[key] == pytest.approx(straight.metrics[key], rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_runs_under_ddp_on_two_cpu_processes(tmp_path):
    result = run_cli(
        [*TINY_DATA, *TINY_HVAE, *TINY_RUN, "trainer=ddp_cpu", "trainer.max_epochs=1"], cwd=tmp_path, process=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path / "logs")
    assert (run / "checkpoints" / "last.ckpt").is_file() and "test/elbo" in result.stdout
