"""Train a VAE: ``python -m vae_zoo.train [model=vae] [data=sprites] [key=value ...]``.

A thin Hydra entry point; the work is in :func:`vae_zoo.run.experiment.train`. Continuing a run in
its folder (``hydra.run.dir=<run> ckpt_path=last``) composes that run's ``config.yaml`` first
(:func:`vae_zoo.run.continued_run.register_continued_run_from_argv`), so only what changes is given.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, read_write

from vae_zoo.errors import Preempted, VaeZooError, report_and_exit, report_or_reraise
from vae_zoo.run.config import config_dir
from vae_zoo.run.console import ConsoleLog, lightning_logs_through_root, quiet_known_noise
from vae_zoo.run.continued_run import register_continued_run_from_argv
from vae_zoo.support.extras import check_launcher


def prepare_hydra_for_ddp_children(output_dir: Path) -> None:
    """Lightning starts the extra DDP ranks by re-running this program with ``sys.argv`` plus
    ``hydra.run.dir=<HydraConfig run.dir>`` (and no Hydra output subdir). Make that exactly this
    job: its own folder (in a multirun, ``run.dir`` is not the job's folder) and only this
    job's overrides (no ``-m`` or sweep lists, which would start a sweep in every rank).
    Without this each rank gets its own output folder (lightning-hydra-template #393)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = str(output_dir)
    # hydra.mode=RUN: a trial of hparams_search=optuna has its MULTIRUN mode in the config, not in argv
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _main(cfg: DictConfig) -> float:
    """Returns ``cfg.optimized_metric`` (default ``val/elbo``) for sweepers such as Optuna."""
    # Imported here, not at the top: torch and Lightning take seconds to import, and
    # `--help` / `--cfg job` (answered by Hydra before this runs) need neither.
    from vae_zoo.blocks.stats import optimized_value
    from vae_zoo.run.experiment import train

    lightning_logs_through_root()
    prepare_hydra_for_ddp_children(Path(cfg.paths.output_dir))  # read only if a DDP launcher starts more ranks
    with ConsoleLog() as console_log:  # <run>/train.log: the whole console, the last error included
        try:
            return optimized_value(train(cfg, console_log).metrics, cfg.optimized_metric)
        except VaeZooError as error:
            report_or_reraise(error)
        except Preempted as stop:  # not a failure, but not finished: a non-zero status a scheduler requeues
            from rich.console import Console
            from rich.markup import escape

            Console(stderr=True).print(
                f"[bold yellow]preempted:[/bold yellow] {escape(str(stop))}", soft_wrap=True, highlight=False
            )
            raise SystemExit(stop.exit_code) from None


def main() -> None:
    """Register the continued run's config (if the command continues one), then run Hydra."""
    quiet_known_noise()
    groups = {path.name for path in config_dir().iterdir() if path.is_dir()}
    try:
        check_launcher(sys.argv[1:])
        register_continued_run_from_argv(sys.argv[1:], groups)
    except VaeZooError as error:
        report_and_exit(error)
    _main()


if __name__ == "__main__":
    main()
