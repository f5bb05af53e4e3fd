"""Train a VAE: ``python -m vae_zoo.train [model=vae] [data=sprites] [key=value ...]``.

A thin Hydra entry point; the work is in :func:`vae_zoo.experiment.train`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vae_zoo.config import config_dir
from vae_zoo.errors import VaeZooError, report_and_exit
from vae_zoo.experiment import train


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    """Returns ``val/elbo`` so sweepers (e.g. Optuna) can optimise it."""
    try:
        return train(cfg).metrics.get("val/elbo", float("nan"))
    except VaeZooError as error:
        report_and_exit(error)


if __name__ == "__main__":
    main()
