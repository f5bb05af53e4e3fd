"""Hyperparameter search with Optuna (>= 4) as a Hydra sweeper: ``hparams_search=optuna``.

One study lives in shared storage: a journal file by default (``<log_dir>/optuna/<study>.journal``,
no database server, safe for several processes on one file system, NFS included), or an RDB URL
(``hydra.sweeper.storage=postgresql://...``). So:

* several processes or SLURM array jobs that run the same command run trials of **one** study in
  parallel; each asks for trials until the study's finished (complete or pruned) and running
  trials reach ``n_trials``. Two processes that ask at the same moment may run a trial or two
  more than that; a trial that fails elsewhere after a process has stopped is not replaced (run
  the command again);
* a search that was killed **resumes**: run the same command again; its finished trials are kept,
  a trial left running by a process of this machine that no longer exists is marked failed, and
  the search runs the trials still missing;
* hopeless trials are **pruned**: every validation epoch each trial reports ``optimized_metric``
  (:class:`vae_zoo.callbacks.optuna_pruning.OptunaPruning`, a Lightning callback) and the study's pruner (median rule by default)
  may stop it. The run stops like an early-stopped one (checkpoints and metrics intact) and the
  trial is recorded as pruned.

Each trial's run stores a heartbeat on the trial every minute (``alive_at``, Optuna's journal
storage has none of its own); a search that starts fails the running trials that have been silent
for ``stale_after_minutes`` (30), whichever machine ran them. A search gives up, with the last
error, when its own failed trials outnumber ``n_trials`` (failed trials are not finished ones).

Trial ``n`` of the study runs in ``<sweep folder>/<n>``, and its run folder is stored with it
(user attribute ``run_dir``). The best trial goes to ``<sweep folder>/optimization_results.yaml``.

Written here, not taken from Hydra's plugin: hydra-optuna-sweeper (1.3, the last release)
requires ``optuna<3``, whose storages predate journal files and SQLAlchemy 2, so its study lived
in one process; and optuna-integration's Lightning callback raises ``TrialPruned`` out of
``trainer.fit`` (the run ends as a crash: no final checkpoint, the loggers finalised as failed)
and needs the Trial object in the sweeper's process, which Hydra's joblib and SLURM launchers
do not give. The search-space grammar (``interval``, ``choice``, ``range``, ``tag(log, ...)``)
is that plugin's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from vae_zoo.callbacks.optuna_pruning import ALIVE_AT, built_from_config, open_storage
from vae_zoo.errors import ConfigError

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# ------------------------------------------------------------------------------ search space
def distribution(override: Override) -> BaseDistribution | str:
    """An Optuna distribution for a sweep override (``interval(0.5, 8)``, ``tag(log, interval(1e-4, 1e-2))``,
    ``choice(4, 8, 16)``, ``range(1, 5)``), or the value as text for a plain one."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator()))
    if override.is_range_sweep():  # range(start, stop, step): stop excluded, as in Python
        values = list(override.sweep_iterator())
        if any(isinstance(n, float) for n in (value.start, value.stop, value.step)):
            return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
        return IntDistribution(int(values[0]), int(values[-1]), step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(
        f"{override.input_line} is a sweep Optuna cannot search; use interval(...), choice(...) or range(...)."
    )


def suggest(trial: optuna.Trial, name: str, space: BaseDistribution) -> Any:
    """``trial.suggest_float`` / ``suggest_int`` / ``suggest_categorical`` for a distribution."""
    if isinstance(space, FloatDistribution):
        return trial.suggest_float(name, space.low, space.high, step=space.step, log=space.log)
    if isinstance(space, IntDistribution):
        return trial.suggest_int(name, space.low, space.high, step=space.step, log=space.log)
    return trial.suggest_categorical(name, space.choices)


def search_space(
    params: Mapping[str, Any] | None, arguments: Sequence[str]
) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The distributions to search (``hydra.sweeper.params``, then sweeps on the command line)
    and the fixed overrides (the command line's plain ``key=value``)."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(lines):
        key, value = override.get_key_element(), distribution(override)
        if isinstance(value, BaseDistribution):
            space[key] = value
            fixed.pop(key, None)
        else:
            fixed[key] = value
            space.pop(key, None)
    return space, fixed


# ----------------------------------------------------------------------------------- storage
def load_study(storage: str, study_name: str) -> optuna.Study:
    """The study of a running or finished search, e.g. to read its trials."""
    return optuna.load_study(study_name=study_name, storage=open_storage(storage))


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def fail_abandoned_trials(study: optuna.Study, stale_after_s: float | None = None) -> list[int]:
    """Mark failed the trials whose run is gone; returns their numbers. Gone: the search process
    that asked for it was on this machine and no longer exists (killed, crashed, out of memory),
    or its run last said it was alive (:data:`~vae_zoo.callbacks.optuna_pruning.ALIVE_AT`, every
    minute) more than ``stale_after_s`` seconds ago, on any machine. A trial whose run has not
    started yet (queued on a cluster) is left alone."""
    abandoned = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("search_process", {})
        alive_at = trial.user_attrs.get(ALIVE_AT)
        gone_here = owner.get("host") == socket.gethostname() and _process_is_gone(int(owner.get("pid", -1)))
        silent = stale_after_s is not None and alive_at is not None and time.time() - float(alive_at) > stale_after_s
        if gone_here or silent:
            study.tell(trial.number, state=TrialState.FAIL)
            abandoned.append(trial.number)
    return abandoned


def search_fingerprint(space: Mapping[str, BaseDistribution], fixed: Mapping[str, str], direction: str) -> str:
    """What makes two searches the same study: the space, the fixed overrides, the direction."""
    described = {
        "space": {key: optuna.distributions.distribution_to_json(value) for key, value in sorted(space.items())},
        "fixed": dict(sorted(fixed.items())),
        "direction": direction,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _quoted(text: str) -> str:
    """A Hydra override value that keeps any character (paths, URLs)."""
    return "'" + text.replace("'", "\\'") + "'"  # Hydra unescapes a backslash only before a quote


def _override_value(node: Any) -> str:
    """A config node (mapping, list, number, text, None) as a Hydra override value."""
    if isinstance(node, (DictConfig, Mapping)):
        items = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        return "{" + ", ".join(f"{key}: {_override_value(value)}" for key, value in items.items()) + "}"
    if isinstance(node, (list, tuple)):
        return "[" + ", ".join(_override_value(value) for value in node) + "]"
    if node is None:
        return "null"
    if isinstance(node, float) and not math.isfinite(node):
        return "nan" if math.isnan(node) else ("inf" if node > 0 else "-inf")  # Hydra's spelling
    if isinstance(node, (bool, int, float)):
        return json.dumps(node)
    return _quoted(str(node))


# ------------------------------------------------------------------------------- the search
class OptunaSearch:
    """The sweep: ask the study for trials, run each as a Hydra job, tell the study the result.

    Args:
        study_name, storage: the study; ``storage`` is a journal file path or an RDB URL.
        direction: ``maximize`` (for ``val/elbo``) or ``minimize``.
        n_trials: how many finished (complete or pruned) trials the study should hold.
        n_jobs: trials asked at once and handed to the launcher together (parallel with the
            joblib or SLURM launchers).
        sampler, pruner: an Optuna sampler and pruner, or their ``_target_`` configs (None: Optuna's defaults).
        params: the search space, ``key: interval(...)`` etc.
        max_failure_rate: the share of a batch's trials that may fail before the search stops.
        stale_after_minutes: a running trial whose run has not said it is alive for this long
            (its heartbeat, every minute) is failed when a search starts (None: only trials of
            dead processes of this machine are).
    """

    def __init__(
        self,
        study_name: str,
        storage: str,
        direction: str,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        pruner: Any,
        params: Mapping[str, Any] | None,
        max_failure_rate: float,
        stale_after_minutes: float | None = None,
    ):
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction must be maximize or minimize, got {direction!r}.")
        self.study_name, self.storage_spec, self.direction = study_name, str(storage), direction
        self.stale_after_minutes = stale_after_minutes
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), max(1, int(n_jobs)), float(max_failure_rate)
        self.sampler_cfg, self.pruner_cfg, self.params = sampler, pruner, params

    def open_study(self, fingerprint: str) -> optuna.Study:
        study = optuna.create_study(
            study_name=self.study_name,
            storage=open_storage(self.storage_spec),
            direction=self.direction,
            load_if_exists=True,
            sampler=built_from_config(self.sampler_cfg),
            pruner=built_from_config(self.pruner_cfg),
        )
        made_by = study.user_attrs.get("search")
        if made_by is None:
            study.set_user_attr("search", fingerprint)
        elif made_by != fingerprint:
            raise ConfigError(
                f"The study {self.study_name!r} in {self.storage_spec} was made by another search (another search space, "
                "fixed overrides or direction). Give this one its own study: hydra.sweeper.study_name=<name>."
            )
        return study

    def run(self, launcher: Any, config: DictConfig, arguments: Sequence[str]) -> dict[str, Any]:
        space, fixed = search_space(
            OmegaConf.to_container(self.params, resolve=True) if isinstance(self.params, DictConfig) else self.params,
            arguments,
        )
        if not space:
            raise ConfigError(
                "The search has nothing to search: set hydra.sweeper.params (e.g. model.beta: interval(0.5, 8))."
            )
        study = self.open_study(search_fingerprint(space, fixed, self.direction))
        abandoned = fail_abandoned_trials(
            study, None if self.stale_after_minutes is None else 60.0 * self.stale_after_minutes
        )
        if abandoned:
            log.info("Trials %s were left running by a search process that is gone: marked failed.", abandoned)
        sweep_dir = Path(config.hydra.sweep.dir)
        log.info(
            "Study %r in %s: %d of %d trials finished.",
            self.study_name,
            self.storage_spec,
            self._finished(study),
            self.n_trials,
        )
        failed = 0
        while True:
            to_go = self.n_trials - len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
            if to_go <= 0:
                break
            trials = [study.ask() for _ in range(min(to_go, self.n_jobs))]
            overrides = [self._overrides(trial, space, fixed, config, sweep_dir) for trial in trials]
            returns = self._launch(launcher, trials, overrides)
            failures = self._tell(study, trials, returns)
            failed += len(failures)
            # failed trials are not finished ones: without the cap a search of failing runs never ends
            if failures and (len(failures) / len(trials) > self.max_failure_rate or failed > self.n_trials):
                raise failures[0]
        return self._results(study, sweep_dir)

    def _finished(self, study: optuna.Study) -> int:
        return len(study.get_trials(deepcopy=False, states=FINISHED))

    def _overrides(
        self,
        trial: optuna.Trial,
        space: Mapping[str, BaseDistribution],
        fixed: Mapping[str, str],
        config: DictConfig,
        sweep_dir: Path,
    ) -> list[str]:
        trial.set_user_attr("search_process", {"host": socket.gethostname(), "pid": os.getpid()})
        trial.set_user_attr("run_dir", str(sweep_dir / str(trial.number)))
        suggested = {key: suggest(trial, key, value) for key, value in space.items()}
        pruning = {
            "_target_": "vae_zoo.callbacks.optuna_pruning.OptunaPruning",
            "storage": _quoted(self.storage_spec),
            "study_name": _quoted(self.study_name),
            "trial_number": trial.number,
            "monitor": _quoted(str(config.optimized_metric)),
            # a study's pruner is not kept in its storage: the trial's process builds the same one
            "pruner": _override_value(config.hydra.sweeper.get("pruner")),
        }
        return [
            *(f"{key}={value}" for key, value in fixed.items()),
            *(f"{key}={value}" for key, value in suggested.items()),
            *(f"+callbacks.optuna_pruning.{key}={value}" for key, value in pruning.items()),
            f"hydra.sweep.subdir={trial.number}",  # the run folder is named by the trial, whichever process runs it
        ]

    def _launch(self, launcher: Any, trials: list[optuna.Trial], overrides: list[list[str]]) -> list[Any]:
        """Run the jobs of a batch together (in parallel with the joblib or SLURM launchers); each
        runs in ``<sweep>/<trial number>`` (its ``hydra.sweep.subdir`` override)."""
        return list(launcher.launch(overrides, initial_job_idx=trials[0].number))

    def _tell(self, study: optuna.Study, trials: list[optuna.Trial], returns: list[Any]) -> list[BaseException]:
        states = {trial.number: trial.state for trial in study.get_trials(deepcopy=False)}
        failures: list[BaseException] = []
        for trial, ret in zip(trials, returns):
            if states[trial.number] != TrialState.RUNNING:  # pruned by its run, or failed by another search process
                log.info("Trial %d: %s.", trial.number, states[trial.number].name.lower())
                continue
            try:
                value = float(ret.return_value)  # raises the job's exception if it failed
                if not math.isfinite(value):
                    raise ValueError(f"the run returned {value} for {self.direction}")
                study.tell(trial, value)
                log.info("Trial %d: value %.4f", trial.number, value)
            except Exception as error:  # a failed trial is recorded, and the search goes on
                study.tell(trial, state=TrialState.FAIL)
                log.warning("Trial %d failed: %s", trial.number, error)
                failures.append(error)
        return failures

    def _results(self, study: optuna.Study, sweep_dir: Path) -> dict[str, Any]:
        counts = {
            state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
            for state in (*FINISHED, TrialState.FAIL)
        }
        results = {
            "name": "optuna",
            "study_name": self.study_name,
            "storage": self.storage_spec,
            "direction": self.direction,
            "trials": counts,
        }
        if counts["complete"]:
            best = study.best_trial
            results.update(
                best_trial=best.number,
                best_params=best.params,
                best_value=best.value,
                best_run_dir=best.user_attrs.get("run_dir"),
            )
            log.info(
                "Best of %d complete trials: trial %d, value %.4f, with %s",
                counts["complete"],
                best.number,
                best.value,
                best.params,
            )
        else:
            log.warning("The study %r has no complete trial (%s): no best trial to report.", self.study_name, counts)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        return results
