"""Train a VAE: ``python -m vae_zoo.train [model=vae] [data=sprites] [key=value ...]``.

A thin Hydra entry point; the work is in :func:`vae_zoo.experiment.train`.
"""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_zoo.config import config_dir
from vae_zoo.errors import VaeZooError, report_and_exit
from vae_zoo.experiment import objective, train

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    """Returns ``cfg.optimized_metric`` (default ``val/elbo``) for sweepers such as Optuna."""
    try:
        return objective(train(cfg).metrics, cfg.optimized_metric)
    except VaeZooError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # Hydra records this job as failed and runs the others; it reports the failure
            # (exit code 1) after the last job.
            log.error("%s", error)
            raise
        report_and_exit(error)


if __name__ == "__main__":
    main()
