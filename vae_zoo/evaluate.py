"""Evaluate a trained run: ``python -m vae_zoo.evaluate ckpt_path=<checkpoint> [key=value ...]``.

A thin Hydra entry point; the work is in :func:`vae_zoo.evaluation.runner.evaluate`. The config is the
run's own (``<run>/config.yaml``), then ``conf/evaluate.yaml``, then the command line, e.g.::

    python -m vae_zoo.evaluate ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
    python -m vae_zoo.evaluate ckpt_path=<run folder> data.root=/data evaluate.num_importance_samples=5000
    python -m vae_zoo.evaluate ckpt_path=... evaluate.fid=false evaluate.ood.classes=[7,9]

Results go to ``<run>/evaluation/metrics.json`` and ``metrics.md`` and to the console.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vae_zoo.errors import VaeZooError, report_or_reraise
from vae_zoo.run.config import config_dir
from vae_zoo.run.run_config import main_with_run_config


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def _main(cfg: DictConfig) -> None:
    from vae_zoo.evaluation.runner import evaluate  # torch and Lightning only once there is work (not for --help)

    try:
        evaluate(cfg).print()
    except VaeZooError as error:
        report_or_reraise(error)


def main() -> None:
    """Register the run's config from ``ckpt_path=...`` (Hydra composes it first), then run."""
    main_with_run_config(_main)


if __name__ == "__main__":
    main()
