"""The Hydra side of vae_zoo's Optuna search: Hydra finds sweepers in the ``hydra_plugins``
namespace package only. Nothing heavy is imported here: Hydra imports every plugin module at
start-up, for ``--help`` too; Optuna, torch and Lightning are imported once a search starts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Trials of one Optuna study in shared storage; see :mod:`vae_zoo.run.search`."""

    def __init__(
        self,
        study_name: str,
        storage: str,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        sampler: Any = None,
        pruner: Any = None,
        params: Any = None,
        max_failure_rate: float = 0.0,
        stale_after_minutes: float | None = None,
    ):
        self.settings = dict(
            study_name=study_name,
            storage=storage,
            direction=direction,
            n_trials=n_trials,
            n_jobs=n_jobs,
            sampler=sampler,
            pruner=pruner,
            params=params,
            max_failure_rate=max_failure_rate,
            stale_after_minutes=stale_after_minutes,
        )
        self.launcher: Any = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: Sequence[str]) -> Any:
        from vae_zoo.support.extras import require

        require("optuna", "hparams_search=optuna", minimum="4")
        from vae_zoo.run.search import OptunaSearch

        return OptunaSearch(**self.settings).run(self.launcher, self.config, arguments)
