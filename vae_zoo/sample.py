"""Pictures from a trained run: ``python -m vae_zoo.sample ckpt_path=<checkpoint> [num_samples=64]``.

A thin Hydra entry point; the work is in :func:`vae_zoo.evaluation.runner.write_samples`. The config is
the run's own (``<run>/config.yaml``), then ``conf/sample.yaml``, then the command line, e.g.::

    python -m vae_zoo.sample ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt num_samples=64
    python -m vae_zoo.sample ckpt_path=<run folder> seed=1 traversals.span=2 interpolations.steps=12

Writes ``<run>/samples/prior_samples.png``, ``interpolations.png`` and ``traversals.png``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape

from vae_zoo.errors import VaeZooError, report_or_reraise
from vae_zoo.run.config import config_dir
from vae_zoo.run.run_config import main_with_run_config


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="sample")
def _main(cfg: DictConfig) -> None:
    from vae_zoo.evaluation.runner import write_samples  # torch and Lightning only once there is work (not for --help)

    try:
        written = write_samples(cfg)
    except VaeZooError as error:
        report_or_reraise(error)
    console = Console()
    for name, path in written.items():
        console.print(f"[bold]{name}:[/bold] {escape(str(path))}", soft_wrap=True, highlight=False)


def main() -> None:
    """Register the run's config from ``ckpt_path=...`` (Hydra composes it first), then run."""
    main_with_run_config(_main)


if __name__ == "__main__":
    main()
