"""What a run logs as its KL weighting is what its loss used, for every variant (issue 28).

Each variant trains a few steps from its config with a warm-up (or free bits, or the capacity form)
and logs every step. For each logged step t, the loss's actual coefficient is then measured on the
trained model with its schedule at t: the gradient of the loss with respect to each dimension's
batch-mean KL (the β·w(t) the loss put on it, 0 where free bits hold a dimension at its floor), the
capacity C(t) solved from γ·|KL − C|, or for β-TCVAE the factor between the loss and its logged total
correlation. A schedule a variant cannot honour is refused at build, naming it.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from vae_zoo.errors import ConfigError
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import build, train

from conftest import TINY_DATA, TINY_NET, TINY_RUN, TINY_SPRITES

WARMUP = ["kl_schedule=warmup", "model.kl_schedule.warmup_steps=4"]
STEPS = ["trainer.max_steps=6", "trainer.log_every_n_steps=1", "test=false", "trainer.limit_val_batches=1"]


def logged(run: Path, key: str) -> dict[int, float]:
    with open(run / "csv" / "metrics.csv") as f:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


def kl_gradient(model, terms) -> torch.Tensor:
    """d loss / d KL_i for each latent dimension's batch-mean KL: the weight the loss put on it."""
    kl = terms.kl_per_example_dim.detach().requires_grad_()
    loss = model.objective(dataclasses.replace(terms, kl_per_example_dim=kl, extras={}))
    (gradient,) = torch.autograd.grad(loss, kl, allow_unused=True)
    return torch.zeros(kl.shape[1]) if gradient is None else gradient.sum(dim=0)


def model_batch(result):
    model = result.experiment.model.eval()
    loader = result.experiment.datamodule.val_dataloader()
    batch = result.experiment.datamodule.on_after_batch_transfer(next(iter(loader)), 0)
    return model, batch


@pytest.mark.parametrize(
    "model",
    [
        ["model=vae"],
        ["model=beta_vae", "model.beta=4"],
        ["model=cvae"],
        # two optimizer steps per batch (Lightning's max_steps counts both): 6 batches
        ["model=factor_vae", "model.discriminator_hidden=[16]", "trainer.max_steps=12"],
        ["model=dip_vae"],
        ["model=hvae", "model.latent_dims=[4,2]", "model.hidden=[32,16]"],
    ],
    ids=lambda overrides: overrides[0].removeprefix("model="),
)
def test_logged_beta_is_the_weight_the_loss_put_on_the_kl(model, tmp_path):
    net = [] if model[0] == "model=hvae" else TINY_NET["gaussian"]
    result = train(compose_config([*TINY_DATA, *TINY_RUN, *net, *WARMUP, *STEPS, *model], output_dir=tmp_path))
    betas = logged(tmp_path, "train/beta")
    assert sorted(betas) == list(range(6))
    model_, batch = model_batch(result)
    terms = model_.batch_terms(batch)
    for step, beta in betas.items():
        model_.kl_schedule.set_step(step)
        torch.testing.assert_close(
            kl_gradient(model_, terms), torch.full((model_.latent_dim,), beta), atol=1e-6, rtol=1e-5
        )
    assert betas[0] == 0 and betas[5] == pytest.approx(model_.beta)  # the warm-up itself was logged


def test_beta_tcvae_logs_its_beta_the_weight_on_total_correlation(tmp_path):
    overrides = ["model=beta_tcvae", "model.beta=6", "model.alpha=0", "model.gamma=0"]  # the loss: recon + w·β·TC
    result = train(compose_config([*overrides, *TINY_SPRITES, *WARMUP, *STEPS], output_dir=tmp_path))
    betas = logged(tmp_path, "train/beta")
    assert sorted(betas) == list(range(6)) and betas[5] == pytest.approx(6.0)
    model, batch = model_batch(result)
    for step, beta in betas.items():
        model.kl_schedule.set_step(step)
        torch.manual_seed(0)
        terms = model.batch_terms(batch)
        torch.testing.assert_close(
            terms.loss - terms.recon, beta * terms.extras["total_correlation"], rtol=1e-5, atol=1e-6
        )


def test_free_bits_and_capacity_are_logged_as_the_loss_used_them(tmp_path):
    free_bits = train(
        compose_config(
            ["model=beta_vae", "kl_schedule=free_bits", "model.kl_schedule.free_bits=0.3", *TINY_SPRITES, *STEPS],
            output_dir=tmp_path / "free_bits",
        )
    )
    assert logged(tmp_path / "free_bits", "train/free_bits") == pytest.approx(dict.fromkeys(range(6), 0.3))
    model, batch = model_batch(free_bits)
    terms = model.batch_terms(batch)
    below = terms.kl_per_dim < 0.3
    gradient = kl_gradient(model, terms)
    assert torch.all(gradient[below] == 0) and torch.allclose(gradient[~below], torch.tensor(model.beta))

    # the default schedule: the warm-up, with the sprites' floor held while the KL warms up, then lifted
    lifted = tmp_path / "default"
    result = train(
        compose_config(["model=beta_vae", "model.kl_schedule.warmup_steps=3", *TINY_SPRITES, *STEPS], output_dir=lifted)
    )
    floors = logged(lifted, "train/free_bits")
    assert floors == pytest.approx({0: 0.5, 1: 0.5, 2: 0.5, 3: 0.0, 4: 0.0, 5: 0.0})
    model, batch = model_batch(result)
    terms = model.batch_terms(batch)
    for step, floor in floors.items():
        model.kl_schedule.set_step(step)
        expected = torch.where(terms.kl_per_dim.detach() < floor, 0.0, model.beta * model.kl_schedule.weight())
        torch.testing.assert_close(kl_gradient(model, terms), expected, atol=1e-6, rtol=1e-5)

    capacity = train(
        compose_config(
            [
                "model=beta_vae",
                "kl_schedule=capacity",
                "model.kl_schedule.capacity_max=20",
                "model.kl_schedule.capacity_steps=4",
                "model.kl_schedule.gamma=10",
                *TINY_SPRITES,
                *STEPS,
            ],
            output_dir=tmp_path / "capacity",
        )
    )
    capacities = logged(tmp_path / "capacity", "train/capacity")
    assert not logged(tmp_path / "capacity", "train/beta") and sorted(capacities) == list(range(6))
    model, batch = model_batch(capacity)
    terms = model.batch_terms(batch)
    for step, logged_capacity in capacities.items():
        model.kl_schedule.set_step(step)
        side = kl_gradient(model, terms)[0] / 10.0  # d γ|KL − C| / dKL = ±γ
        kl_part = model.objective(terms) - terms.recon
        assert (terms.kl - side * kl_part / 10.0).item() == pytest.approx(
            logged_capacity, abs=1e-4
        )  # C solved from the loss


@pytest.mark.parametrize(
    "model", [["model=iwae", *TINY_NET["gaussian"]], ["model=vq_vae", *TINY_NET["vq_vae"]]], ids=["iwae", "vq_vae"]
)
def test_a_loss_without_a_kl_weight_logs_no_schedule(model, tmp_path):
    train(compose_config([*TINY_DATA, *TINY_RUN, *STEPS, *model], output_dir=tmp_path))
    with open(tmp_path / "csv" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert "train/loss" in header and not {"train/beta", "train/capacity", "train/free_bits"} & set(header)


@pytest.mark.parametrize(
    "model,schedule,refused",
    [
        ("iwae", "warmup", "warmup"),
        ("iwae", "free_bits", "free_bits"),
        ("vq_vae", "cyclical", "cyclical"),
        ("beta_tcvae", "free_bits", "free_bits"),
        ("beta_tcvae", "capacity", "capacity"),
    ],
)
def test_a_schedule_the_objective_cannot_honour_is_refused_at_build(model, schedule, refused, tmp_path):
    net = TINY_NET["vq_vae" if model == "vq_vae" else "gaussian"]
    cfg = compose_config([f"model={model}", f"kl_schedule={schedule}", *TINY_DATA, *net], output_dir=tmp_path)
    with pytest.raises(ConfigError, match=rf"cannot honour the KL schedule's {refused}.*kl_schedule="):
        build(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_beta_tcvae_honours_a_warm_up_and_cyclical_annealing(tmp_path):
    for schedule in ("warmup", "cyclical"):
        build(compose_config(["model=beta_tcvae", f"kl_schedule={schedule}", *TINY_SPRITES], output_dir=tmp_path))
