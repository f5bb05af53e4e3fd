"""The private Lightning attributes vae_zoo reads are where the pinned Lightning keeps them, and a
release that moves one is a loud error naming it, not a silent fallback (issue 28)."""

from __future__ import annotations

import hashlib
import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import tomllib
import torch
from lightning.pytorch.callbacks import LambdaCallback
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.trainer import call
from packaging.specifiers import SpecifierSet

from vae_zoo.support import lightning_internals as internals
from vae_zoo.support.lightning_internals import (
    TESTED_LIGHTNING,
    LightningInternalsChanged,
    logs_reach_a_logger,
    replaces_batch_sampler,
)

REPO = Path(__file__).resolve().parents[1]


def test_the_installed_lightning_is_the_tested_range_and_pyproject_pins_it():
    assert L.__version__ in SpecifierSet(TESTED_LIGHTNING)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if re.match(r"lightning\b", d)]
    assert SpecifierSet(pin.removeprefix("lightning")) == SpecifierSet(TESTED_LIGHTNING)


def test_the_privates_are_read_from_a_real_trainer():
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, log_every_n_steps=1, enable_progress_bar=False)
    assert isinstance(logs_reach_a_logger(trainer), bool)
    assert replaces_batch_sampler(trainer) is False  # one process: nothing to replace


@pytest.mark.parametrize("read", [logs_reach_a_logger, replaces_batch_sampler])
def test_a_lightning_that_moved_a_private_fails_loudly_naming_it(read):
    moved = SimpleNamespace(world_size=2)  # a trainer whose connectors are gone
    with pytest.raises(LightningInternalsChanged, match=r"Trainer\._[a-z_]+_connector.*lightning>=2\.6,<2\.7"):
        read(moved)


class Recorder(L.Callback):
    """Records the hooks of a training step that it overrides."""

    def __init__(self, calls: list):
        self.calls = calls

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.calls.append(("Recorder.on_train_batch_end", batch_idx))

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.calls.append(("Recorder.on_before_optimizer_step", trainer.global_step))


def fit_recording(dispatch) -> list:
    """Fit a tiny model for 3 steps with Lightning's hooks dispatched by ``dispatch``; the calls
    the callbacks saw, in order."""
    calls: list = []
    callbacks = [
        L.Callback(),  # overrides nothing
        Recorder(calls),
        LambdaCallback(on_before_backward=lambda trainer, module, loss: calls.append(("Lambda.on_before_backward",))),
    ]
    original, call._call_callback_hooks = call._call_callback_hooks, dispatch
    try:
        torch.manual_seed(0)
        L.Trainer(
            accelerator="cpu",
            max_steps=3,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
        ).fit(BoringModel())
    finally:
        call._call_callback_hooks = original
    return calls


def test_skipping_empty_callback_hooks_calls_every_hook_a_callback_has_as_lightning_does():
    lightnings = fit_recording(internals._lightning_call_callback_hooks)
    assert lightnings == fit_recording(internals.call_callback_hooks_that_do_something)
    assert (
        lightnings.count(("Lambda.on_before_backward",)) == 3 and len(lightnings) == 9
    )  # a hook set on the instance counts
    assert not internals.does_something(L.Callback(), "on_train_batch_end")
    assert internals.does_something(Recorder([]), "on_train_batch_end")


def test_the_callback_dispatch_was_copied_from_the_installed_lightning():
    """A Lightning release whose dispatch differs fails here (and a run keeps Lightning's own, warning)."""
    source = inspect.getsource(internals._lightning_call_callback_hooks)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == internals.COPIED_CALL_CALLBACK_HOOKS
    assert internals.skip_callback_hooks_that_do_nothing()
    assert call._call_callback_hooks is internals.call_callback_hooks_that_do_something


def test_the_callbacks_a_hook_calls_are_worked_out_again_when_the_list_changes():
    quiet, loud = L.Callback(), Recorder([])
    callbacks = [quiet]
    assert internals.callbacks_that_do_something(callbacks, "on_train_batch_end") == []
    callbacks.append(loud)  # in place, as a trainer's callback list may change
    assert internals.callbacks_that_do_something(callbacks, "on_train_batch_end") == [loud]
    assert internals.callbacks_that_do_something(callbacks, "on_train_batch_end", monitoring_callbacks=True) == []
    assert internals.callbacks_that_do_something([loud, quiet], "on_train_batch_end") == [loud]
