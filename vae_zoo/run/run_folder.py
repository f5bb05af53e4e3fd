"""A run folder belongs to one process at a time, and is written only once a run is known to work.

* :class:`RunFolderLock`: an exclusive ``flock`` on ``<run>/.lock``, held for the life of the
  run by the process of global rank 0. A second process that opens the same folder (another
  ``python -m vae_zoo.train hydra.run.dir=<run>``, a requeued job whose first copy still runs)
  is refused with a message naming the holder. The kernel drops the lock when its holder
  dies, even by ``kill -9``, so a crash never leaves a stale lock; the file only records who
  holds it, and is emptied on release.
* :func:`check_fresh_or_resumed`: a new run (no ``ckpt_path``) does not start in a folder that
  already holds a run's checkpoints or metrics; it would overwrite them.
* :func:`atomic_write`: every file of a run (checkpoints, config, metrics history) is written to a
  temporary file beside it and renamed over it, so a kill leaves the old file or the new one.
* :func:`write_run_record`: ``config.yaml`` (the resolved config) and Hydra's own record
  (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``), written only after the resume
  checks passed. ``conf/train.yaml`` sets ``hydra.output_subdir: null`` so that Hydra does not
  write ``.hydra/`` itself before the task starts (it would, into a run a refused resume must
  leave untouched).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_zoo.errors import RunFolderError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected against a second process
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on ``.<name>.tmp-<pid>`` beside ``path``, fsync, rename over ``path``.

    Raises:
        RunFolderError: the folder could not be written (full disk, no permission); the
            previous ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as error:
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        problem = "No space left on the disk of" if full else f"Could not write ({error.strerror or error}) in"
        fix = (
            "Free space there or set paths.log_dir to another disk"
            if full
            else "Make the folder writable or set paths.log_dir elsewhere"
        )
        raise RunFolderError(
            f"{problem} {path.parent} while writing {path.name}; the previous {path.name} is intact. "
            f"{fix}, then continue with ckpt_path=last."
        ) from None
    finally:
        temporary.unlink(missing_ok=True)


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
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
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


#: The file of a second stage's run folder naming the run of its frozen first stage.
PARENT_FILE = "parent.json"


def write_run_record(cfg: DictConfig, resolved: dict[str, Any], folder: Path, parent: Any = None) -> None:
    """Write ``config.yaml`` (``resolved``, the fully resolved config) atomically, and, inside a
    Hydra run, Hydra's record of the job in ``.hydra/`` as Hydra itself would write it. A second
    stage's run also gets ``parent.json``: the run folder and checkpoint of its first stage
    (``parent``, a :class:`vae_zoo.run.run_config.TrainedRun`)."""
    atomic_write(folder / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(OmegaConf.create(resolved)).encode()))
    if parent is not None:
        record = {"run_dir": str(parent.run_dir), "checkpoint": str(parent.checkpoint)}
        atomic_write(folder / PARENT_FILE, lambda f: f.write((json.dumps(record, indent=2) + "\n").encode()))
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    record = folder / ".hydra"
    if cfg.get("continued_run") and (record / "hydra.yaml").is_file():
        # the config groups the run was made with, not this command's defaults: what a later
        # continuation repeating the run's first command is compared with (continued_run.run_choices)
        from vae_zoo.run.continued_run import run_choices

        hydra_cfg = OmegaConf.create(OmegaConf.to_container(hydra_cfg, resolve=False))
        for group, option in run_choices(folder).items():
            hydra_cfg.hydra.runtime.choices[group] = None if option == "null" else option
    for name, node in (
        ("config.yaml", cfg),
        ("hydra.yaml", hydra_cfg),
        ("overrides.yaml", hydra_cfg.hydra.overrides.task),
    ):
        atomic_write(record / name, lambda f, node=node: f.write(OmegaConf.to_yaml(node).encode()))
