"""Logger factories that need more than a config can say (W&B's identity and offline fallback)."""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger

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
    return WandbLogger(
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


class WandbRunIdInCheckpoint(L.Callback):
    """Record the W&B run id in each checkpoint, so resuming from it continues the same W&B
    run (see :func:`vae_zoo.experiment.resume_wandb_run`). Does nothing without W&B."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                checkpoint["wandb_run_id"] = logger.version
