"""What vae_zoo needs from Lightning that it has no public API for, in one place: two facts it
reads, one dispatch it makes cheaper, and where a checkpoint counts optimizer steps.

* whether this training step's logged values reach a logger (the trainer's logger connector
  decides, from ``log_every_n_steps`` and the count of batches that stepped: skipping ``self.log``
  on the other steps is what makes logging cost nothing, BENCHMARKS.md "Framework overhead");
* whether the trainer would replace the data's batch sampler by a ``DistributedSampler``
  (``Trainer(use_distributed_sampler=...)`` is stored on a private connector only).

Both are private attributes of Lightning's ``Trainer``, tested with the range ``pyproject.toml``
pins (:data:`TESTED_LIGHTNING`). If a Lightning release moves one, the read fails loudly, naming
the attribute and the tested range, instead of falling back without a word
(``tests/test_lightning_internals.py``).

The dispatch: every training step Lightning calls six hooks on every callback (on_train_batch_start,
on_before_backward, ... on_train_batch_end), each inside a profiler context whose name formats the
callback's ``state_key``: about 4 µs a call. Of a default run's 14 callbacks, 82 of those 84 calls a
step reach ``Callback``'s own empty method: a third of a millisecond a step spent calling nothing
(BENCHMARKS.md, "Framework overhead"). :func:`skip_callback_hooks_that_do_nothing` replaces
Lightning's ``trainer.call._call_callback_hooks`` with the same function that skips those calls
(it was copied from the tested release; a release whose function differs keeps its own, with a
warning). Every callback that overrides a hook is called as before, in the same order; which
callbacks those are is worked out once per hook and callback list (:func:`callbacks_that_do_something`).

The step count: a checkpoint's fit loop keeps the optimizer steps of Lightning's automatic and of
its manual optimisation in two trackers (:data:`AUTOMATIC_STEPS`, :data:`MANUAL_STEPS`);
:func:`carry_step_count` lets a run saved under one resume under the other at its step.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from typing import Any

import lightning
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping
from lightning.pytorch.trainer import call as lightning_call

log = logging.getLogger(__name__)

#: the Lightning releases these reads are tested with (pyproject.toml pins the same)
TESTED_LIGHTNING = ">=2.6,<2.7"


class LightningInternalsChanged(RuntimeError):
    """A private Lightning attribute vae_zoo reads is not where the tested releases keep it."""


def private(obj: Any, path: str) -> Any:
    """``obj.<path>`` for a dotted path of attributes, or :class:`LightningInternalsChanged`."""
    value = obj
    for name in path.split("."):
        try:
            value = getattr(value, name)
        except AttributeError as error:
            raise LightningInternalsChanged(
                f"Lightning {lightning.__version__} has no Trainer.{path} (missing: {name!r}), which vae_zoo reads "
                f"because no public API gives it (vae_zoo/support/lightning_internals.py). vae_zoo is tested with "
                f"lightning{TESTED_LIGHTNING}: install such a release (pip install 'lightning{TESTED_LIGHTNING}')."
            ) from error
    return value


def logs_reach_a_logger(trainer: Any) -> bool:
    """Whether values logged in this training step are written by the loggers this step
    (Lightning's own test: every ``log_every_n_steps``-th batch that stepped, or a stop)."""
    return bool(private(trainer, "_logger_connector.should_update_logs"))


def replaces_batch_sampler(trainer: Any) -> bool:
    """Whether the trainer would put a ``DistributedSampler`` in the data loaders (DDP with
    ``use_distributed_sampler=True``)."""
    return trainer.world_size > 1 and bool(private(trainer, "_accelerator_connector.use_distributed_sampler"))


#: sha256 (first 16 hex digits) of the source of Lightning's ``_call_callback_hooks`` that
#: :func:`call_callback_hooks_that_do_something` was copied from (Lightning 2.6)
COPIED_CALL_CALLBACK_HOOKS = "c413fb9a6a9ce1a3"
_lightning_call_callback_hooks = lightning_call._call_callback_hooks


def does_something(callback: Callback, hook_name: str) -> bool:
    """Whether ``callback``'s ``hook_name`` is its own (its class's or the instance's), not the
    empty method of Lightning's ``Callback``."""
    hook = getattr(callback, hook_name)
    return getattr(hook, "__func__", hook) is not getattr(Callback, hook_name, None)


#: (hook name, monitoring_callbacks) -> (the callback list it was worked out for, the callbacks of
#: that list whose hook does something); worked out again when the trainer's list changes
_DOING_SOMETHING: dict[tuple[str, bool | None], tuple[list[Callback], list[Callback]]] = {}


def callbacks_that_do_something(
    callbacks: list[Callback], hook_name: str, monitoring_callbacks: bool | None = None
) -> list[Callback]:
    """The callbacks whose ``hook_name`` :func:`does_something`, in order, among those Lightning
    would call (``monitoring_callbacks``: only, or all but, the checkpoint and early-stopping ones).
    Remembered per hook for as long as the list holds the same callbacks: checking each of a
    default run's 14 callbacks for each of a step's six hooks was 234 ``getattr`` calls a step."""
    key = (hook_name, monitoring_callbacks)
    known = _DOING_SOMETHING.get(key)
    if known is not None and known[0] == callbacks:  # the same callback objects, in the same order
        return known[1]
    chosen = callbacks
    if monitoring_callbacks is True:
        chosen = [cb for cb in callbacks if isinstance(cb, (EarlyStopping, Checkpoint))]
    elif monitoring_callbacks is False:
        chosen = [cb for cb in callbacks if not isinstance(cb, (EarlyStopping, Checkpoint))]
    chosen = [cb for cb in chosen if does_something(cb, hook_name)]
    _DOING_SOMETHING[key] = (list(callbacks), chosen)
    return chosen


def call_callback_hooks_that_do_something(
    trainer: Any, hook_name: str, *args: Any, monitoring_callbacks: bool | None = None, **kwargs: Any
) -> None:
    """Lightning's ``trainer.call._call_callback_hooks`` (2.6), calling only the callbacks whose
    hook :func:`does_something`."""
    pl_module = trainer.lightning_module
    if pl_module:
        prev_fx_name = pl_module._current_fx_name
        pl_module._current_fx_name = hook_name

    for callback in callbacks_that_do_something(trainer.callbacks, hook_name, monitoring_callbacks):
        fn = getattr(callback, hook_name)
        if callable(fn):
            with trainer.profiler.profile(f"[Callback]{callback.state_key}.{hook_name}"):
                fn(trainer, trainer.lightning_module, *args, **kwargs)

    if pl_module:
        pl_module._current_fx_name = prev_fx_name


def skip_callback_hooks_that_do_nothing() -> bool:
    """Make Lightning dispatch callback hooks through :func:`call_callback_hooks_that_do_something`
    (once per process; idempotent). Returns whether it does: False, with a warning, when this
    Lightning's function is not the one it was copied from."""
    if lightning_call._call_callback_hooks is call_callback_hooks_that_do_something:
        return True
    source = inspect.getsource(_lightning_call_callback_hooks)
    if hashlib.sha256(source.encode()).hexdigest()[:16] != COPIED_CALL_CALLBACK_HOOKS:
        log.warning(
            "Lightning %s dispatches callback hooks with a function vae_zoo was not tested with; it is left "
            "as it is (each training step then calls every callback's empty hooks, about 0.3 ms a step). vae_zoo "
            "is tested with lightning%s (vae_zoo/support/lightning_internals.py).",
            lightning.__version__,
            TESTED_LIGHTNING,
        )
        return False
    lightning_call._call_callback_hooks = call_callback_hooks_that_do_something
    return True


#: where a checkpoint's fit loop keeps the count of optimizer steps, in each of Lightning's two loops
AUTOMATIC_STEPS = "epoch_loop.automatic_optimization.optim_progress"
MANUAL_STEPS = "epoch_loop.manual_optimization.optim_step_progress"


def carry_step_count(checkpoint: dict[str, Any], to_manual: bool) -> None:
    """Let a checkpoint saved by one of Lightning's optimisation loops resume under the other
    with its ``global_step``: Lightning counts the steps of automatic optimisation and those of
    manual optimisation in two progress trackers, and reads ``global_step`` from the one the
    module uses now. A run saved before vae_zoo made single-optimizer steps its own (or with a
    setting that keeps the automatic loop) would otherwise resume at step 0 of the other: its KL
    warm-up, logging cadence and ``max_steps`` started again. Moves the count, in place, only
    when the loop resumed under has none and the other has some."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop")
    if not fit_loop or AUTOMATIC_STEPS not in fit_loop or MANUAL_STEPS not in fit_loop:
        return
    automatic = fit_loop[AUTOMATIC_STEPS]["optimizer"]["step"]
    manual = fit_loop[MANUAL_STEPS]
    if to_manual and manual["total"]["completed"] == 0 and automatic["total"]["completed"] > 0:
        fit_loop[MANUAL_STEPS] = {"total": dict(automatic["total"]), "current": dict(automatic["total"])}
    elif not to_manual and automatic["total"]["completed"] == 0 and manual["total"]["completed"] > 0:
        automatic["total"] = dict(manual["total"])
        automatic["current"] = {"ready": 0, "completed": 0}
