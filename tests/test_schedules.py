"""The KL schedule: its curves, its penalties, and its state across a checkpoint resume."""

import math

import lightning as L
import pytest
import torch
from test_models import make_vae

from vae_zoo.blocks.schedules import KLSchedule
from vae_zoo.data import SpritesDataModule
from vae_zoo.errors import ConfigError


def test_constant_schedule_is_the_plain_kl():
    kl = torch.tensor([0.1, 2.0, 0.0])
    assert KLSchedule().kl_penalty(kl).item() == pytest.approx(2.1)
    assert KLSchedule().kl_penalty(kl, beta=4.0).item() == pytest.approx(8.4)


def test_linear_warmup():
    schedule = KLSchedule(warmup_steps=100)
    assert [schedule.weight(t) for t in (0, 25, 50, 100, 1000)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_cyclical_annealing_follows_fu_et_al():
    """Fu et al. 2019: β_t = f(τ), τ = mod(t, T/M)/(T/M); f(τ) = τ/R for τ <= R, else 1."""
    period, ratio = 40, 0.5
    schedule = KLSchedule(cycle_steps=period, cycle_ratio=ratio)
    for t in range(200):
        tau = (t % period) / period
        assert schedule.weight(t) == pytest.approx(tau / ratio if tau <= ratio else 1.0)


def test_capacity_ramps_linearly_then_holds():
    schedule = KLSchedule(capacity_max=25.0, capacity_steps=1000, gamma=1000.0)
    assert [schedule.capacity(t) for t in (0, 500, 1000, 5000)] == [0.0, 12.5, 25.0, 25.0]
    schedule.set_step(500)
    kl = torch.tensor([5.0, 10.0])  # total 15 vs C = 12.5
    assert schedule.kl_penalty(kl).item() == pytest.approx(1000.0 * 2.5)
    assert KLSchedule().capacity() is None


def test_free_bits_floor_each_dimension_in_the_objective():
    schedule = KLSchedule(free_bits=0.5)
    kl = torch.tensor([0.1, 0.4, 2.0], requires_grad=True)
    penalty = schedule.kl_penalty(kl, beta=2.0)
    assert penalty.item() == pytest.approx(2.0 * (0.5 + 0.5 + 2.0))
    penalty.backward()
    # below the floor: no pressure to shrink further; above it: the usual β
    assert kl.grad.tolist() == [0.0, 0.0, 2.0]


def test_a_floor_during_the_warmup_holds_until_it_ends_and_the_objective_is_unfloored_after():
    schedule = KLSchedule(warmup_steps=10, free_bits=0.5, free_bits_during_warmup=True)
    kl = torch.tensor([0.1, 2.0])
    for step, expected in [(0, 0.0), (5, 0.5 * (0.5 + 2.0)), (10, 0.1 + 2.0), (1000, 0.1 + 2.0)]:
        schedule.set_step(step)
        assert schedule.kl_penalty(kl).item() == pytest.approx(expected), step
    assert [schedule.floor(step) for step in (0, 9, 10)] == [0.5, 0.5, 0.0]
    assert KLSchedule(free_bits=0.5).floor(10**6) == 0.5  # otherwise the floor holds throughout
    with pytest.raises(ConfigError, match="no warm-up"):
        KLSchedule(free_bits=0.5, free_bits_during_warmup=True)


@pytest.mark.parametrize(
    "kwargs,problem",
    [
        ({"warmup_steps": 10, "cycle_steps": 10}, "not both"),
        ({"capacity_max": 5.0, "free_bits": 0.5}, "replaces"),
        ({"cycle_ratio": 0.0}, "cycle_ratio"),
    ],
)
def test_contradictory_settings_are_refused(kwargs, problem):
    with pytest.raises(ConfigError, match=problem):
        KLSchedule(**kwargs)


class RecordSchedule(L.Callback):
    def __init__(self):
        self.values: dict[int, tuple[float, float | None]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step - 1  # the step this batch trained with
        self.values[step] = (pl_module.kl_schedule.weight(), pl_module.kl_schedule.capacity())


def fit(model, max_steps, tmp_path, ckpt_path=None, recorder=None):
    data = SpritesDataModule(num_train=128, num_val=16, num_test=16, image_size=28, batch_size=16)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[recorder] if recorder else [],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("kwargs", [{"warmup_steps": 20}, {"capacity_max": 10.0, "capacity_steps": 20}])
def test_resume_mid_schedule_continues_where_it_stopped(tmp_path, kwargs):
    torch.manual_seed(0)
    straight = RecordSchedule()
    fit(make_vae(image_size=28, kl_schedule=KLSchedule(**kwargs)), 12, tmp_path / "a", recorder=straight)

    torch.manual_seed(0)
    first = fit(make_vae(image_size=28, kl_schedule=KLSchedule(**kwargs)), 6, tmp_path / "b")
    checkpoint_path = tmp_path / "mid.ckpt"
    first.save_checkpoint(checkpoint_path)
    assert torch.load(checkpoint_path, weights_only=True)["kl_schedule"] == {"step": 5}
    resumed = RecordSchedule()
    fresh = make_vae(image_size=28, kl_schedule=KLSchedule(**kwargs))  # its schedule starts at step 0
    fit(fresh, 12, tmp_path / "b", ckpt_path=checkpoint_path, recorder=resumed)

    assert sorted(resumed.values) == list(range(6, 12))
    for step in range(6, 12):
        assert resumed.values[step] == straight.values[step]
    weight, capacity = resumed.values[6]
    assert (weight == pytest.approx(6 / 20)) if "warmup_steps" in kwargs else (capacity == pytest.approx(10.0 * 6 / 20))
    assert not math.isclose(weight if "warmup_steps" in kwargs else capacity, 0.0)
