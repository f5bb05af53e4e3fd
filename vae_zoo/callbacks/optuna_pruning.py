"""Inside each trial of ``hparams_search=optuna`` (:mod:`vae_zoo.run.search`): report the validation
metric to the trial every epoch and stop the run when the study's pruner says so. Also the one
place a study's storage is opened from its spec (a journal file path or an RDB URL)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.trial import TrialState

log = logging.getLogger(__name__)

#: The trial's user attribute holding the time (Unix seconds) its run last said it was alive.
ALIVE_AT = "alive_at"
#: How often a trial's run says so.
HEARTBEAT_S = 60.0


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """An RDB URL (``sqlite:///...``, ``postgresql://...``) or a journal file path."""
    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    path = Path(spec).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def built_from_config(node: Any) -> Any:
    """A sampler or pruner: Hydra builds the sweeper's nested ``_target_`` nodes itself; a node
    given as a plain mapping (outside Hydra) is built here."""
    return instantiate(node) if isinstance(node, (Mapping, DictConfig)) else node


class OptunaPruning(L.Callback):
    """Report ``monitor`` to the trial after each validation epoch; when the study's pruner says
    so, stop the run as an early stop would (its checkpoints and metrics are written as usual)
    and record the trial as pruned. The sweeper adds this callback to each trial's run.

    ``pruner``: the study's pruner (or its config; None: Optuna's default, the median rule), which
    Optuna does not keep in the storage. Under DDP, rank zero reports and decides, and every rank stops.

    A heartbeat: every ``heartbeat_s`` seconds of training, rank zero stores the time on the trial
    (user attribute ``alive_at``), so that a search on another machine can tell a trial whose
    process died (Optuna's journal storage has no heartbeat of its own).
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_number: int,
        monitor: str = "val/elbo",
        pruner: Any = None,
        heartbeat_s: float = HEARTBEAT_S,
    ):
        self.storage, self.study_name, self.trial_number, self.monitor = storage, study_name, int(trial_number), monitor
        self.pruner = built_from_config(pruner)
        self.heartbeat_s = float(heartbeat_s)
        self._trial: optuna.Trial | None = None
        self._last_beat = 0.0
        self.pruned_at_epoch: int | None = None

    def beat(self) -> None:
        """Store the time on the trial now (rank zero)."""
        self._last_beat = time.time()
        self.trial().set_user_attr(ALIVE_AT, self._last_beat)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.frozen_trial().state == TrialState.RUNNING:
            self.beat()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if (
            trainer.is_global_zero
            and time.time() - self._last_beat > self.heartbeat_s
            and self.frozen_trial().state == TrialState.RUNNING
        ):
            self.beat()

    def frozen_trial(self, study: optuna.Study | None = None) -> optuna.trial.FrozenTrial:
        """The trial as the storage holds it now (its state, its attributes)."""
        study = study or self.trial().study
        [frozen] = [t for t in study.get_trials(deepcopy=False) if t.number == self.trial_number]
        return frozen

    def trial(self) -> optuna.Trial:
        if self._trial is None:
            study = optuna.load_study(
                study_name=self.study_name, storage=open_storage(self.storage), pruner=self.pruner
            )
            # the trial the sweeper asked, reopened in this process (Optuna has no public lookup of
            # a trial's id by its number; the Trial constructor is public)
            self._trial = optuna.Trial(study, self.frozen_trial(study)._trial_id)
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_at_epoch is not None:
            return
        prune, failure, value = False, None, float("nan")
        if trainer.is_global_zero:
            from vae_zoo.blocks.stats import optimized_value  # the same check, and message, as a trial's value

            try:
                value = optimized_value(
                    {name: float(metric) for name, metric in trainer.callback_metrics.items()}, self.monitor
                )
                if self.frozen_trial().state == TrialState.RUNNING:  # not the resumed run of a finished trial
                    self.trial().report(float(value), step=trainer.current_epoch)
                    prune = self.trial().should_prune()
            except Exception as error:  # raised below on every rank: the others would wait in broadcast
                failure = error
        prune, message = trainer.strategy.broadcast((prune, None if failure is None else str(failure)))
        if failure is not None:
            raise failure
        if message is not None:
            raise RuntimeError(f"Rank zero's report to the Optuna trial failed: {message}")
        if prune:
            trainer.should_stop = True
            self.pruned_at_epoch = trainer.current_epoch
            if trainer.is_global_zero:
                self.trial().study.tell(self.trial_number, state=TrialState.PRUNED)
                log.info(
                    "Pruned by the study's pruner after epoch %d (%s = %.4f).",
                    trainer.current_epoch,
                    self.monitor,
                    value,
                )
