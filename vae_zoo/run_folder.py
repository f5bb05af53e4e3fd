"""A run folder belongs to one process at a time, and is written only once a run is known to work.

* :class:`RunFolderLock`: an exclusive ``flock`` on ``<run>/.lock``, held for the life of the
  run by the process of global rank 0. A second process that opens the same folder (another
  ``python -m vae_zoo.train hydra.run.dir=<run>``, a requeued job whose first copy still runs)
  is refused with a message naming the holder. The kernel drops the lock when its holder
  dies, even by ``kill -9``, so a crash never leaves a stale lock; the file only records who
  holds it, and is emptied on release.
* :func:`check_fresh_or_resumed`: a new run (no ``ckpt_path``) does not start in a folder that
  already holds a run's checkpoints or metrics; it would overwrite them.
* :func:`register_continued_run_from_argv`: ``train hydra.run.dir=<run> ckpt_path=last``
  (or a checkpoint of that run) continues with the run's own ``config.yaml``, command-line
  values on top, so a resume needs no repeat of the original overrides.
* :func:`write_run_record`: ``config.yaml`` (the resolved config) and Hydra's own record
  (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``), written only after the resume
  checks passed. ``conf/train.yaml`` sets ``hydra.output_subdir: null`` so that Hydra does not
  write ``.hydra/`` itself before the task starts (it would, into a run a refused resume must
  leave untouched).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_zoo.checkpointing import atomic_write
from vae_zoo.errors import ConfigError, RunFolderError, UntrustedFileError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected against a second process
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunFolderLock:
    """Hold ``<folder>/.lock`` exclusively (a context manager; also :meth:`acquire` / :meth:`release`).

    Raises:
        RunFolderError: from :meth:`acquire`, when another process holds the folder.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunFolderLock:
        if fcntl is None or self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise RunFolderError(
                f"{self.folder} is in use by another vae_zoo process ({holder}). Two runs in one folder would mix "
                "their metrics and checkpoints. Wait for it to finish or stop it, or give this run its own folder "
                "(a new hydra.run.dir)."
            ) from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # the file says who holds the lock only while it is held
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _describe(record: bytes) -> str:
    try:
        holder = json.loads(record)
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: {holder['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"


def existing_run(folder: Path) -> str | None:
    """What of a training run ``folder`` already holds (checkpoints, a metrics history), or None."""
    checkpoints = sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt"))
    metrics = folder / "csv" / "metrics.csv"
    found = []
    if checkpoints:
        found.append(f"checkpoints/{', '.join(checkpoints)}")
    if metrics.is_file() and metrics.stat().st_size > 0:
        found.append("csv/metrics.csv")
    return " and ".join(found) or None


def check_fresh_or_resumed(folder: Path, resuming: bool) -> None:
    """A run started without ``ckpt_path`` must not overwrite another run's files.

    Raises:
        RunFolderError: ``folder`` already holds checkpoints or metrics and this is not a resume.
    """
    if resuming:
        return
    found = existing_run(folder)
    if found:
        raise RunFolderError(
            f"{folder} already holds a run ({found}); a new run there would overwrite it. Continue that run with "
            "ckpt_path=last, or start this one in its own folder (a new hydra.run.dir)."
        )


def write_run_record(cfg: DictConfig, resolved: dict[str, Any], folder: Path) -> None:
    """Write ``config.yaml`` (``resolved``, the fully resolved config) atomically, and, inside a
    Hydra run, Hydra's record of the job in ``.hydra/`` as Hydra itself would write it."""
    atomic_write(folder / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(OmegaConf.create(resolved)).encode()))
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    record = folder / ".hydra"
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
        atomic_write(record / name, lambda f, node=node: f.write(OmegaConf.to_yaml(node).encode()))


#: Config group (a Hydra ConfigStore entry) under which a continued run's config.yaml is composed.
CONTINUED_RUN_GROUP = "continued_run"
#: Settings a continued run takes from the command line and conf/train.yaml, never from the run's file.
_NOT_FROM_THE_RUN = ("trusted_targets", "ckpt_path", "continued_run")


def continued_run_folder(args: list[str]) -> Path | None:
    """The run folder a ``train`` command line continues in place: ``hydra.run.dir=<folder>``
    with ``ckpt_path=last`` or ``ckpt_path=<folder>/checkpoints/<file>``, when the folder has
    a ``config.yaml``. None otherwise (a new run, or a resume into another folder)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, given = OverridesParser.create(), {}
    for arg in args:
        if not arg.startswith("-") and "=" in arg:
            try:
                override = parser.parse_override(arg)
            except Exception:  # noqa: BLE001 - Hydra itself reports malformed overrides
                continue
            given[override.key_or_group] = override
    run_dir, ckpt = given.get("hydra.run.dir"), given.get("ckpt_path")
    if run_dir is None or ckpt is None or ckpt.is_sweep_override() or run_dir.is_sweep_override():
        return None
    folder = Path(str(run_dir.value())).expanduser().resolve()
    ckpt_value = str(ckpt.value())
    if ckpt_value != "last" and Path(ckpt_value).expanduser().resolve().parent != folder / "checkpoints":
        return None
    return folder if (folder / "config.yaml").is_file() else None


def register_continued_run_from_argv(args: list[str], groups: set[str]) -> Path | None:
    """Make the continued run's ``config.yaml`` the config group option ``continued_run=config``,
    which ``conf/train.yaml`` composes after every other group (the command line still comes
    last). Returns the run folder, or None when the command does not continue one.

    Raises:
        UntrustedFileError: the run's ``config.yaml`` is not the plain file training writes.
        ConfigError: the command line also picks a config group (``model=...``): the run's own
            model, data and trainer are what it continues with.
    """
    from hydra.core.config_store import ConfigStore

    from vae_zoo.trust import plain_config_problems

    folder = continued_run_folder(args)
    if folder is None:
        return None
    chosen = sorted({arg.split("=", 1)[0].lstrip("+~") for arg in args if "=" in arg} & groups)
    if chosen and "LOCAL_RANK" not in os.environ:  # a DDP rank Lightning starts repeats the argv: let it be
        raise ConfigError(
            f"Continuing {folder} uses its own config.yaml; the command line also picks {', '.join(chosen)}, which "
            "would be ignored. Change single values instead (e.g. model.beta=8, trainer.max_epochs=20), or start a "
            "new run in a new folder to train another configuration."
        )
    node = OmegaConf.load(folder / "config.yaml")
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{folder / 'config.yaml'} is not a config mapping.")
    problems = plain_config_problems(node)
    if problems:
        raise UntrustedFileError(
            f"Not continuing {folder}: its config.yaml holds {'; '.join(problems)}, which training never writes and "
            "which could run code. Remove them if you made them, or start a new run."
        )
    for key in _NOT_FROM_THE_RUN:
        node.pop(key, None)
    node.continued_run = str(folder)
    ConfigStore.instance().store(group=CONTINUED_RUN_GROUP, name="config", node=node, package="_global_")
    return folder
