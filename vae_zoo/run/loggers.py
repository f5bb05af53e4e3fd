"""Loggers that need more than a config can say: a CSV history that survives resumes, and W&B's
identity and offline fallback."""

from __future__ import annotations

import csv
import io
import logging
import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from vae_zoo.errors import RunFolderError
from vae_zoo.run.run_folder import atomic_write

log = logging.getLogger(__name__)


def wandb_credentials_available() -> bool:
    """Whether wandb would find an API key: ``WANDB_API_KEY`` or a netrc entry for its host
    (where ``wandb login`` stores the key). Checked by hand because wandb's own lookup is
    internal API that changes between releases."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = os.environ.get("NETRC") or Path.home() / ".netrc"
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def hydra_run_identity() -> tuple[str | None, str | None]:
    """(name, group) for the current Hydra job: the task overrides joined by commas (the
    run's name) and, in a multirun, the sweep folder's name (the group). (None, None) outside
    a Hydra run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    name = ",".join(hydra_cfg.overrides.task) or "defaults"
    group = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    return name, group


def wandb_logger(
    save_dir: str,
    project: str | None = None,
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    job_type: str = "train",
    log_model: bool = False,
    **init_kwargs: Any,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` that names itself from the Hydra overrides, groups the runs
    of one multirun, honours ``WANDB_MODE`` / ``WANDB_PROJECT`` / ``WANDB_ENTITY``, and without
    credentials logs offline after a one-line notice instead of prompting for a key.
    ``init_kwargs`` go to ``wandb.init`` (a resumed run passes ``id`` and ``resume="allow"``)."""
    hydra_name, hydra_group = hydra_run_identity()
    offline = False
    if os.environ.get("WANDB_MODE") is None and not wandb_credentials_available():
        offline = True
        log.warning(
            "W&B: no API key found (WANDB_API_KEY or `wandb login`): logging offline to %s/wandb%s; "
            "upload later with `wandb sync %s/wandb/offline-run-*`.",
            save_dir,
            " without checkpoint upload" if log_model else "",
            save_dir,
        )
        log_model = False  # artifacts cannot be uploaded offline
    logger = WandbLogger(
        save_dir=save_dir,
        project=project or os.environ.get("WANDB_PROJECT") or "vae_zoo",
        entity=entity or os.environ.get("WANDB_ENTITY"),
        name=name or hydra_name,
        group=group or hydra_group,
        tags=list(tags),
        job_type=job_type,
        offline=offline,
        log_model=log_model,
        **init_kwargs,
    )
    # Lightning always passes anonymous=None to wandb.init, and wandb >= 0.22 warns that the
    # (removed) setting "has no effect" whenever the key is there: leave it out.
    if getattr(logger, "_wandb_init", {}).get("anonymous", "unset") is None:
        del logger._wandb_init["anonymous"]
    return logger


class WandbRunIdInCheckpoint(L.Callback):
    """Record the W&B run id in each checkpoint, so resuming from it continues the same W&B
    run (see :func:`vae_zoo.run.experiment.resume_wandb_run`). Does nothing without W&B."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                checkpoint["wandb_run_id"] = logger.version


# ------------------------------------------------------------------------ CSV history
class _MetricsHistoryWriter(ExperimentWriter):  # private: built by CSVLogger only, never by a config
    """Lightning's CSV writer, changed so that ``metrics.csv`` is one history across resumes.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts, and rewrites the
    file in place when a new column appears. This one keeps the file, appends to it, rewrites
    it only atomically (temporary file, then rename), and drops a line torn by a kill while it
    was being appended. :meth:`keep_first_rows` cuts the history back to what it held when a
    checkpoint was written, so that the steps a resumed run replays appear once.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir=log_dir)
        self.metrics_file = Path(self.metrics_file_path).resolve()
        self.metrics_keys, rows, torn = self._read(self.metrics_file)
        self.rows_on_disk = len(rows)
        if torn:
            self._rewrite(rows)

    def _check_log_dir_exists(self) -> None:
        """Keep the existing history (Lightning's writer deletes it here)."""

    @staticmethod
    def _read(path: Path) -> tuple[list[str], list[dict[str, str]], bool]:
        """(header, complete rows, whether a torn last line was dropped) of a ``metrics.csv``."""
        if not path.is_file():
            return [], [], False
        data = path.read_bytes()
        torn = bool(data) and not data.endswith(b"\n")
        if torn:
            data = data[: data.rfind(b"\n") + 1]
        reader = csv.DictReader(io.StringIO(data.decode(), newline=""))
        rows = list(reader)
        return list(reader.fieldnames or []), rows, torn

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        def write(f: Any) -> None:
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
            f.write(text.getvalue().encode())

        atomic_write(self.metrics_file, write)
        self.rows_on_disk = len(rows)

    def save(self) -> None:
        if not self.metrics:
            return
        new_keys = self._record_new_keys()
        if new_keys and self.metrics_file.is_file():  # a new column: rewrite with the new header
            self._rewrite(self._read(self.metrics_file)[1] + self.metrics)
        else:
            fresh = not self.metrics_file.is_file()
            try:
                with open(self.metrics_file, "a", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                    if fresh:
                        writer.writeheader()
                    writer.writerows(self.metrics)
            except OSError as error:  # a torn last line is dropped at the next start
                raise RunFolderError(
                    f"Could not append to {self.metrics_file} ({error.strerror or error}): free space on that disk or "
                    "make it writable, then continue with ckpt_path=last (the history is cut back to the checkpoint)."
                ) from None
            self.rows_on_disk += len(self.metrics)
        self.metrics = []

    def keep_first_rows(self, count: int, source: Path | None = None) -> None:
        """Make the history the first ``count`` rows of ``source`` (default: this file), in
        this file; rows not yet written are dropped too."""
        self.metrics = []
        source = self.metrics_file if source is None else Path(source).resolve()
        if not source.is_file() or (source == self.metrics_file and count >= self.rows_on_disk):
            return
        self.metrics_keys, rows, _ = self._read(source)
        self._rewrite(rows[:count])


class CSVLogger(LightningCSVLogger):
    """Lightning's ``CSVLogger`` with a history that survives resumes (:class:`_MetricsHistoryWriter`):
    continuing a run in its folder appends to ``csv/metrics.csv`` instead of replacing it."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _MetricsHistoryWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _MetricsHistoryWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def keep_first_rows(self, count: int, source: Path | None = None) -> None:
        self.experiment.keep_first_rows(count, source)


class MetricsHistoryInCheckpoint(L.Callback):
    """Record in each checkpoint how many rows of ``csv/metrics.csv`` it has seen (the file is
    flushed first), and on resume cut the history back to them: the rows a killed process logged
    after its last checkpoint are logged again by the resumed run, so every step appears once.

    Which history a checkpoint belongs to is read from where the checkpoint is
    (``<run>/checkpoints/<file>``), never from a path stored in it: a moved run folder still
    resumes in place, and a crafted checkpoint cannot name another file. Resuming into another
    folder starts that folder's history with the original run's rows."""

    @staticmethod
    def _csv_loggers(trainer: L.Trainer) -> list[CSVLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, CSVLogger)] if trainer.is_global_zero else []

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in self._csv_loggers(trainer)[:1]:
            logger.save()
            checkpoint["metrics_history"] = {"rows": logger.experiment.rows_on_disk}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        rows = (checkpoint.get("metrics_history") or {}).get("rows")
        if not isinstance(rows, int) or trainer.ckpt_path is None:
            return
        run_folder = Path(trainer.ckpt_path).resolve().parent.parent
        for logger in self._csv_loggers(trainer):
            ours = logger.experiment.metrics_file
            theirs = run_folder / ours.relative_to(Path(logger.save_dir).resolve())
            if theirs == ours:
                logger.keep_first_rows(rows)
            elif not ours.is_file() and theirs.is_file():
                logger.keep_first_rows(rows, theirs)
