"""Train a VAE: ``python -m vae_zoo.train [model=vae] [data=sprites] [key=value ...]``.

A thin Hydra entry point; the work is in :func:`vae_zoo.experiment.train`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vae_zoo.config import config_dir
from vae_zoo.errors import Preempted, VaeZooError, report_or_reraise
from vae_zoo.experiment import objective, train


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    """Returns ``cfg.optimized_metric`` (default ``val/elbo``) for sweepers such as Optuna."""
    try:
        return objective(train(cfg).metrics, cfg.optimized_metric)
    except VaeZooError as error:
        report_or_reraise(error)
    except Preempted as stop:  # not a failure, but not finished: a non-zero status a scheduler requeues
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[bold yellow]preempted:[/bold yellow] {escape(str(stop))}", soft_wrap=True, highlight=False)
        raise SystemExit(stop.exit_code) from None


if __name__ == "__main__":
    main()
