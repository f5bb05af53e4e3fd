"""Building and running an experiment from a composed config; the Hydra entry points call
these, and tests call them directly (no command line needed)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vae_zoo.data.base import InMemoryDataModule
from vae_zoo.errors import ConfigError, Preempted
from vae_zoo.models.base import ELBOModule
from vae_zoo.models.data_fit import check_compatible
from vae_zoo.nets.memory_format import use_channels_last
from vae_zoo.run.checkpointing import LAST, LastCheckpoint, remove_stale_temporaries
from vae_zoo.run.config import check_run_settings, flatten_config
from vae_zoo.run.console import ConsoleLog, quiet_known_noise
from vae_zoo.run.continued_run import keep_only_what_the_run_had, resume_wandb_run
from vae_zoo.run.cpu import use_cpu_settings
from vae_zoo.run.loggers import CSVLogger as HistoryCSVLogger
from vae_zoo.run.run_folder import RunFolderLock, check_fresh_or_resumed, existing_run, write_run_record
from vae_zoo.run.trust import check_trusted_targets
from vae_zoo.support.checkpoint_files import check_checkpoint_fits, load_checkpoint
from vae_zoo.support.extras import check_targets
from vae_zoo.support.instantiation import config_origin, instantiate, instantiate_all
from vae_zoo.support.lightning_internals import skip_callback_hooks_that_do_nothing

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    """Everything a run needs, built from one config."""

    cfg: DictConfig
    datamodule: InMemoryDataModule
    model: ELBOModule
    trainer: L.Trainer

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.paths.output_dir)


def resolve_checkpoint(cfg: DictConfig) -> Path | None:
    """The checkpoint to resume from: ``ckpt_path`` as given (it must exist), or for ``last``
    this run folder's ``checkpoints/last.ckpt`` if there is one (continue a run in place with
    ``hydra.run.dir=<run folder> ckpt_path=last``; a requeued SLURM job finds its own)."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        path = Path(cfg.paths.output_dir) / "checkpoints" / LAST
        if not path.is_file():
            log.warning("ckpt_path=last: no checkpoint in %s yet, starting from scratch.", path.parent)
            return None
        return path
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"No checkpoint at {path}: ckpt_path must be a checkpoint file or `last`.")
    return path


def build(cfg: DictConfig) -> Experiment:
    """Seed, then build data (checking its files first), model and trainer.

    Order matters for clear errors: missing data files and impossible shapes are reported
    here, before anything trains.
    """
    check_run_settings(cfg)  # learning rates, epochs: numbers the run can use
    L.seed_everything(cfg.seed, workers=True)
    origin = config_origin(cfg)
    datamodule: InMemoryDataModule = instantiate(cfg.data, origin)
    datamodule.prepare_data()  # missing files fail now, before the model is built
    model: ELBOModule = instantiate(cfg.model, origin)
    check_compatible(datamodule, model)
    if cfg.get("channels_last"):
        use_channels_last(model)
    trainer_overrides = {}
    if model.take_over_the_step(
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
        gradient_clip_algorithm=cfg.trainer.get("gradient_clip_algorithm"),
        accumulate_grad_batches=cfg.trainer.get("accumulate_grad_batches", 1),
        precision=cfg.trainer.get("precision", "32-true"),
    ):  # the model makes its own optimisation step (fewer calls a step), and clips it itself
        trainer_overrides["gradient_clip_val"] = None
    check_targets(cfg.get("logger"), "logger")  # an optional package that is missing: said now, with its extra
    callbacks = instantiate_all(cfg.get("callbacks"), origin)
    skip_callback_hooks_that_do_nothing()  # a third of a millisecond a step (vae_zoo/support/lightning_internals.py)
    if not any(isinstance(callback, ProgressBar) for callback in callbacks):
        # callbacks.progress_bar=null: plain logs, not Lightning's default bar
        trainer_overrides["enable_progress_bar"] = False
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        origin,
        callbacks=callbacks,
        logger=instantiate_all(cfg.get("logger"), origin) or False,
        **trainer_overrides,
    )
    return Experiment(cfg=cfg, datamodule=datamodule, model=model, trainer=trainer)


@contextlib.contextmanager
def plain_cuda_check_on_the_cpu(trainer: L.Trainer) -> Iterator[None]:
    """While a CPU run trains, let ``torch.cuda.is_available()`` answer from the CUDA runtime.

    Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` when it is imported, so that asking
    whether there is a GPU never initialises CUDA before a fork. torch then answers every call
    by loading NVML afresh, and every ``optimizer.step()`` asks (torch's graph-capture check): on a
    CUDA build of torch without a GPU that cost 0.06 ms per step, 1 % of an MLP step. A CPU run
    puts nothing on a GPU, so it has no CUDA state to protect; a GPU run already holds CUDA
    (torch then caches the answer) and is left alone."""
    variable = "PYTORCH_NVML_BASED_CUDA_CHECK"
    value = os.environ.get(variable)
    if value is None or trainer.strategy.root_device.type != "cpu":
        yield
        return
    del os.environ[variable]
    try:
        yield
    finally:
        os.environ[variable] = value


def global_batch_size(experiment: Experiment) -> int:
    """Examples per optimiser step over all devices: data.batch_size is per device."""
    trainer = experiment.trainer
    return experiment.datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches


@dataclass
class TrainResult:
    """What :func:`train` returns: the final metrics and the trained experiment."""

    metrics: dict[str, float]
    experiment: Experiment


def train(cfg: DictConfig, console_log: ConsoleLog | None = None) -> TrainResult:
    """Train (and optionally test) the configured model; return the final metrics with it.

    The run folder ``cfg.paths.output_dir`` receives the resolved config (``config.yaml``),
    checkpoints, the logger's files and the pictures. Before anything is written there, the
    process of global rank 0 locks the folder (one process per run folder), refuses to start a
    new run over an existing one, and checks that a checkpoint to resume from fits the model:
    a refused run leaves the folder exactly as it was.

    Raises:
        VaeZooError: a user error (config, data, run folder, NaN loss), before training where
            it can be known then.
        Preempted: the job was told to stop (SIGTERM/SIGUSR1) and saved ``last.ckpt``.

    The console of rank 0 is copied into ``<run>/train.log`` (:class:`vae_zoo.run.console.ConsoleLog`;
    pass the entry point's own to also keep what it prints after this returns).
    """
    quiet_known_noise()  # as the CLI does: a run started from Python (a notebook) prints the same lines
    with contextlib.ExitStack() as stack:
        console_log = console_log or stack.enter_context(ConsoleLog())
        return _train(cfg, console_log)


def _train(cfg: DictConfig, console_log: ConsoleLog) -> TrainResult:
    use_cpu_settings(cfg)
    if cfg.get("continued_run"):  # built from the run's config.yaml: only from trusted targets
        check_trusted_targets(
            cfg,
            list(cfg.get("trusted_targets") or ()),
            source=f"the config of {cfg.continued_run} (config.yaml, with the command line)",
        )
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        removed = keep_only_what_the_run_had(cfg, Path(cfg.continued_run), overrides)
        if removed:
            log.info(
                "Continuing %s as it was made: without %s (settings added to vae_zoo since).",
                cfg.continued_run,
                ", ".join(removed),
            )
    output_dir = Path(cfg.paths.output_dir)
    # locked before anything is read or built; rank_zero_only.rank is the rank the environment says
    with RunFolderLock(output_dir) if rank_zero_only.rank == 0 else contextlib.nullcontext():
        checkpoint = resolve_checkpoint(cfg)
        # read once, weights_only (nothing in the file runs) and mmap (the tensors are not read):
        # for the W&B run id and the resume check; Lightning reads it for real
        saved = load_checkpoint(checkpoint, mmap=True) if checkpoint is not None else None
        resume_wandb_run(cfg, saved)
        experiment = build(cfg)
        trainer = experiment.trainer
        try:
            if trainer.is_global_zero:
                prepare_run_folder(cfg, experiment, checkpoint, saved)
                console_log.write_to(output_dir / "train.log")
            return _fit_and_test(cfg, experiment, checkpoint)
        finally:
            finish_wandb_runs(trainer)


def prepare_run_folder(
    cfg: DictConfig, experiment: Experiment, checkpoint: Path | None, saved: dict[str, Any] | None
) -> None:
    """Rank 0, holding the folder's lock: check, then write the run's record.

    The checks come first and write nothing: a new run does not overwrite an existing one, and
    a checkpoint to resume from must fit the model this config builds (tensor names and shapes,
    optimizers). Then stale temporary files of a killed save are removed, the metrics history is
    reset if this run starts from scratch in a folder a killed run had logged into, and
    ``config.yaml``, ``.hydra/`` and the loggers' hyperparameters are written. ``saved`` is
    the checkpoint to resume from as :func:`load_checkpoint` read it (None: a fresh start).
    """
    trainer, output_dir = experiment.trainer, experiment.output_dir
    resuming = checkpoint is not None or cfg.get("ckpt_path") == "last"
    check_fresh_or_resumed(output_dir, resuming)
    if checkpoint is not None:
        check_checkpoint_fits(saved, experiment.model, checkpoint, settings_changed(cfg, checkpoint))
        log.info("Resuming from step %s (epoch %s) of %s.", saved.get("global_step"), saved.get("epoch"), checkpoint)
    remove_stale_temporaries(output_dir, output_dir / "checkpoints", output_dir / "csv")
    if checkpoint is None and existing_run(output_dir):  # ckpt_path=last before any checkpoint: begin again
        for logger in trainer.loggers:
            if isinstance(logger, HistoryCSVLogger):
                logger.keep_first_rows(0)
    batch_semantics = {
        "batch_size_per_device": experiment.datamodule.batch_size,
        "global_batch_size": global_batch_size(experiment),
    }
    resolved = OmegaConf.to_container(cfg, resolve=True)
    write_run_record(cfg, resolved, output_dir, parent=experiment.model.parent)
    for logger in trainer.loggers:
        logger.log_hyperparams({**resolved, **batch_semantics})
    log.info(model_summary(experiment.model))
    log.info(
        "Batch size %d per device; global batch %d (x %d devices x %d accumulation).",
        batch_semantics["batch_size_per_device"],
        batch_semantics["global_batch_size"],
        trainer.world_size,
        trainer.accumulate_grad_batches,
    )


def model_summary(model: ELBOModule) -> str:
    """One line: the model and its trainable parameters per part, e.g. ``VAE: 764 K trainable
    parameters (encoder 382 K, decoder 381 K)``. (Lightning's table is off by default: without an
    example input its FLOPs column is all 0; ``trainer.enable_model_summary=true`` brings it back.)"""
    from lightning.pytorch.utilities.model_summary import get_human_readable_count

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    per_part = {name: count(child) for name, child in model.named_children()}
    parts = [f"{name} {get_human_readable_count(n)}" for name, n in per_part.items() if n]
    return (
        f"{type(model).__name__}: {get_human_readable_count(count(model))} trainable parameters ({', '.join(parts)})."
    )


def settings_changed(cfg: DictConfig, checkpoint: Path) -> list[str]:
    """``key: old -> new`` for the settings of ``cfg`` that differ from the ``config.yaml`` of
    the run ``checkpoint`` belongs to (``<run>/checkpoints/<file>``); paths and the resume
    settings themselves are left out. Empty when that run has no ``config.yaml``."""
    run_config = checkpoint.parent.parent / "config.yaml"
    if not run_config.is_file():
        return []
    before = flatten_config(OmegaConf.load(run_config))
    now = flatten_config(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    ignored = ("paths.", "ckpt_path", "trainer.max_epochs", "trainer.max_steps", "trainer.default_root_dir")
    changed = [
        key for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key) and not key.startswith(ignored)
    ]
    changed = [key for key in changed if not any(part in key for part in ("dirpath", "save_dir"))]
    return [f"{key}: {before.get(key, '(unset)')} -> {now.get(key, '(unset)')}" for key in changed[:8]]


def _fit_and_test(cfg: DictConfig, experiment: Experiment, checkpoint: Path | None) -> TrainResult:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    trainer = experiment.trainer
    model = torch.compile(experiment.model) if cfg.get("compile") else experiment.model
    last = next((callback for callback in trainer.callbacks if isinstance(callback, LastCheckpoint)), None)
    try:
        with plain_cuda_check_on_the_cpu(trainer):
            trainer.fit(model, datamodule=experiment.datamodule, ckpt_path=checkpoint, weights_only=True)
    except SIGTERMException:
        if last is None or last.stopped_by is None:
            raise
    if last is not None and last.stopped_by is not None:
        name, number = last.stopped_by
        raise Preempted(name, number, trainer.global_step, str(last.path))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if cfg.get("test"):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        results = trainer.test(
            model, datamodule=experiment.datamodule, ckpt_path=best or None, verbose=False, weights_only=True
        )
        metrics.update({k: float(v) for k, v in results[0].items()} if results else {})
    if trainer.is_global_zero:
        print_summary(experiment, metrics)
    return TrainResult(metrics=metrics, experiment=experiment)


def finish_wandb_runs(trainer: L.Trainer) -> None:
    """Close this run's W&B run. Lightning's WandbLogger leaves it open, and the next job of a
    multirun (same process) would then log into it instead of starting its own."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:  # never start a run only to end it
            logger.experiment.finish()


def log_viewing_commands(experiment: Experiment) -> dict[str, str]:
    """How to look at each logger's record of this run."""
    commands = {}
    for logger in experiment.trainer.loggers:
        if isinstance(logger, CSVLogger):
            commands["metrics (CSV)"] = f"column -s, -t < {Path(logger.log_dir) / 'metrics.csv'} | less -S"
        elif isinstance(logger, TensorBoardLogger):
            commands["TensorBoard"] = f"tensorboard --logdir {logger.log_dir}"
        elif isinstance(logger, WandbLogger):
            run = logger.experiment
            url = None if getattr(run, "offline", False) else getattr(run, "url", None)  # offline: asking warns
            commands["W&B"] = url if url else f"wandb sync {Path(run.dir).parent}"
    return commands


def print_summary(experiment: Experiment, metrics: dict[str, float]) -> None:
    """A short table of the final numbers, then where the run's files are and how to look."""
    table = Table(title="vae_zoo run summary", header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for key in (
        "val/elbo",
        "val/recon",
        "val/kl",
        "val/bits_per_dim",
        "val/active_units",
        "val/perplexity",
        "test/elbo",
        "test/recon",
        "test/kl",
        "test/bits_per_dim",
    ):
        if key in metrics:  # NaN and inf are shown (in red), never dropped
            unit = {"bits_per_dim": "bits/dim", "active_units": "dimensions", "perplexity": "codes"}.get(
                key.split("/")[1], "nats/example"
            )
            value = f"{metrics[key]:.3f}" if math.isfinite(metrics[key]) else f"[bold red]{metrics[key]}[/bold red]"
            table.add_row(key, value, unit)
    console = Console()
    console.print(table)
    files = {"run folder": str(experiment.output_dir)}
    for callback in experiment.trainer.checkpoint_callbacks:
        if isinstance(callback, LastCheckpoint):
            files["last checkpoint"] = str(callback.path) if callback.path.is_file() else ""
        elif getattr(callback, "best_model_path", ""):
            files["best checkpoint"] = callback.best_model_path
    files["images"] = str(experiment.output_dir / "images")
    files.update(log_viewing_commands(experiment))
    for name, value in files.items():
        if value:
            console.print(f"[bold]{name}:[/bold] {escape(value)}", soft_wrap=True, highlight=False)
