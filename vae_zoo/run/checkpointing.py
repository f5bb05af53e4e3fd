"""Nothing a user made is lost, and nothing a user loads runs code: checkpoint files.

* Reading is :func:`vae_zoo.support.checkpoint_files.load_checkpoint` (``weights_only=True``),
  the one way vae_zoo reads a checkpoint.
* :class:`AtomicCheckpointIO` (the trainer's checkpoint plugin) writes a checkpoint to a
  temporary file in the same folder, flushes it to disk, then renames it over the target
  (``os.replace`` is atomic on POSIX), so a process killed while saving leaves the previous
  checkpoint intact. (Lightning's ``TorchCheckpointIO`` also renames a temporary file, through
  an fsspec transaction, but without ``fsync``: after a power loss the renamed file can be empty.)
  It refuses to write weights that are NaN or infinite, turns a full disk into one message
  naming the folder, and reads through :func:`load_checkpoint`.
* :class:`RandomStateCheckpoint` stores the Python, NumPy and torch (CPU and CUDA) random
  states of every rank in the checkpoint and restores them on resume; Lightning restores model,
  optimiser, LR scheduler, loop counters and callback states, but not random states, so without
  this a resumed run draws different reparameterisation noise and binarizations.
* :class:`LastCheckpoint` keeps ``checkpoints/last.ckpt`` the newest state of the run: at the
  end of every training epoch, when training ends, and when the job is told to stop (SIGTERM,
  or SIGUSR1 from SLURM). It replaces ``ModelCheckpoint(save_last=True)``, which refreshes
  ``last.ckpt`` only when a top-k checkpoint is saved and writes ``last-v1.ckpt`` beside a
  ``last.ckpt`` it did not write itself.
* What a checkpoint must be before it is used (well-formed fields, finite weights, tensors that
  fit the model) is checked there too.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vae_zoo.errors import CheckpointError
from vae_zoo.run.run_folder import atomic_write
from vae_zoo.support.checkpoint_files import load_checkpoint, non_finite_tensor

#: The name of the newest checkpoint of a run, in ``<run>/checkpoints/``.
LAST = "last.ckpt"


# --------------------------------------------------------------------------------- writing
def remove_stale_temporaries(*folders: Path) -> list[Path]:
    """Delete the temporary files an earlier process killed mid-save left in ``folders``
    (``.<name>.tmp-<pid>``, see :class:`AtomicCheckpointIO`). Call only while holding the run
    folder's lock, so that no live process is writing them. Returns what was removed."""
    removed = []
    for folder in folders:
        for path in Path(folder).glob(".*.tmp-*"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically (:func:`atomic_write`), never with non-finite weights,
    read only through :func:`load_checkpoint` (``weights_only=True``), and removed only where
    they were written.

    A checkpoint's ``ModelCheckpoint`` state names files (``best_k_models``,
    ``kth_best_model_path``, ``best_model_path``, ``last_model_path``) that Lightning restores and
    later deletes, recursively, when a better checkpoint replaces them; a crafted checkpoint could
    name any folder. On reading, a path is kept only if it is a ``.ckpt`` file in the folder the
    checkpoint was read from (a run moved or copied since has its files there, under its old
    folder's name: they are re-rooted); any other is dropped with a notice. On removing, only a
    checkpoint file (never a directory) in a folder this process has written checkpoints to is
    deleted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.written_folders: set[str] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        bad = non_finite_tensor(checkpoint.get("state_dict", {}))
        if bad is not None:
            raise CheckpointError(
                f"Not writing {path}: the weight {bad} is NaN or infinite, and a checkpoint of a diverged model "
                "would replace a good one. The previous checkpoint is intact."
            )
        atomic_write(Path(path), lambda f: self.write(checkpoint, f))
        self.written_folders.add(os.path.dirname(_normal(path)))

    def write(self, checkpoint: dict[str, Any], file: Any) -> None:
        """Serialise ``checkpoint`` into the open temporary file."""
        torch.save(checkpoint, file)

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Always ``weights_only=True``, whatever the caller asks: Lightning's ``trainer.fit(ckpt_path=...)``
        reads through here. The file paths of the checkpoint callbacks' states are checked."""
        checkpoint = load_checkpoint(path)
        dropped = keep_checkpoint_paths_inside(checkpoint, os.path.dirname(_normal(path)))
        if dropped:
            rank_zero_warn(
                f"{path} names checkpoint files outside its own folder ({', '.join(sorted(set(dropped))[:3])}); they were "
                "dropped from the checkpoint callback's state and will not be replaced or deleted."
            )
        return checkpoint

    def remove_checkpoint(self, path: str | Path) -> None:
        """Delete the checkpoint file ``path`` if this process wrote checkpoints to its folder;
        anything else (a directory, a file elsewhere) is left, with a notice."""
        normal = _normal(path)
        is_file = os.path.islink(normal) or os.path.isfile(normal)
        if not is_file or os.path.dirname(normal) not in self.written_folders or not normal.endswith(".ckpt"):
            rank_zero_warn(
                f"Not removing {path}: only checkpoint files in the folder this run writes its checkpoints to "
                f"({', '.join(sorted(self.written_folders)) or 'none yet'}) are removed."
            )
            return
        os.unlink(normal)


def _normal(path: str | Path) -> str:
    """``path`` with its folder as the kernel finds it (``..`` and links resolved, as Lightning
    resolves a ``ModelCheckpoint``'s ``dirpath``) and its last part as it is (a link is not followed)."""
    absolute = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


#: The fields of a ``ModelCheckpoint`` state that name files Lightning may delete later.
_PATH_FIELDS = ("best_model_path", "kth_best_model_path", "last_model_path")


def keep_checkpoint_paths_inside(checkpoint: dict[str, Any], folder: str) -> list[str]:
    """Make every file a checkpoint callback's state names a ``.ckpt`` file in ``folder`` (where
    the checkpoint was read from), in place; returns the paths dropped.

    A path in the folder the state records as its ``dirpath`` is re-rooted to ``folder`` (the run
    was moved or copied; its files came with it), and ``dirpath`` becomes ``folder``, so a run
    continued in place keeps replacing its own best checkpoint. Any other path is dropped: an
    empty string for a single path, a missing entry in ``best_k_models``."""
    dropped: list[str] = []
    for state in checkpoint.get("callbacks", {}).values():
        if not isinstance(state, dict) or not ({"best_k_models", *_PATH_FIELDS} & set(state)):
            continue
        recorded = state.get("dirpath")
        recorded = os.path.realpath(recorded) if isinstance(recorded, str) and recorded else folder

        def inside(path: Any, recorded: str = recorded) -> str | None:
            if not isinstance(path, str) or not path:
                return None
            normal = _normal(path)
            if os.path.dirname(normal) == recorded:
                normal = os.path.join(folder, os.path.basename(normal))
            if os.path.dirname(normal) != folder or not normal.endswith(".ckpt") or os.path.isdir(normal):
                dropped.append(str(path))
                return None
            return normal

        for field in _PATH_FIELDS:
            if field in state:
                state[field] = inside(state[field]) or ""
        if "best_k_models" in state:
            models = state["best_k_models"] if isinstance(state["best_k_models"], dict) else {}
            state["best_k_models"] = {kept: score for path, score in models.items() if (kept := inside(path))}
        state["dirpath"] = folder
    return dropped


def _random_state() -> dict[str, Any]:
    """Random states as tensors and plain numbers only, so that ``torch.load`` with
    ``weights_only=True`` accepts the checkpoint."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_random_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RandomStateCheckpoint(L.Callback):
    """Saves every rank's random states in the checkpoint; each rank gets its own back."""

    def state_dict(self) -> dict[str, Any]:
        # Every rank runs this (checkpoint dumping is collective in Lightning; only rank 0 writes)
        state = _random_state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
            return {"per_rank": states}
        return {"per_rank": [state]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict["per_rank"]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Restore after Lightning has finished restoring (and after any seeding in setup).
        pending = getattr(self, "_pending", None)
        if pending is None:
            return
        if len(pending) != trainer.world_size:
            rank_zero_info(
                f"Random states were saved from {len(pending)} ranks but {trainer.world_size} run now: "
                "not restoring them (the run continues, but not bit-for-bit)."
            )
        else:
            _set_random_state(pending[trainer.global_rank])
        self._pending = None


# ------------------------------------------------------------------------- last.ckpt
class LastCheckpoint(Checkpoint):
    """Keeps ``<dirpath>/last.ckpt`` the newest state of the run.

    Written at the end of every training epoch (after that epoch's validation), when training
    ends (also mid-epoch, at ``max_steps``), and when the job is told to stop: SIGTERM (which
    Lightning turns into a ``SIGTERMException`` at the end of the running batch) or SIGUSR1
    (what SLURM sends before a time limit; handled here, as a SIGTERM, unless Lightning's SLURM
    auto-requeue already handles it). After a stop, :attr:`stopped_by` names the signal, and :func:`vae_zoo.run.experiment.train`
    raises :class:`~vae_zoo.errors.Preempted`, so the process exits non-zero.

    A subclass of Lightning's ``Checkpoint``: the trainer runs checkpoint callbacks after the
    others, in the order they are listed, so with ``last_checkpoint`` listed after
    ``model_checkpoint`` (``conf/callbacks/default.yaml``) ``last.ckpt`` records this epoch's
    best. Under Lightning's own SLURM auto-requeue (its SIGUSR1 handler is installed first),
    Lightning writes ``hpc_ckpt_*.ckpt`` on SIGUSR1 instead, and ``ckpt_path=last`` does not see it.

    Args:
        dirpath: the run's checkpoint folder.
    """

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.stopped_by: tuple[str, int] | None = None  # (signal name, number) once told to stop
        self.saved_step: int | None = None
        self._sigusr1_received = False
        self._previous_sigusr1: Any = None

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stopped_by = None
        if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self._previous_sigusr1 = signal.signal(signal.SIGUSR1, self._on_sigusr1)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous_sigusr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_sigusr1)
            self._previous_sigusr1 = None

    def _on_sigusr1(self, signum: int, frame: Any) -> None:
        # Stop the way SIGTERM stops: Lightning then raises SIGTERMException at the end of the
        # current batch, once its loop counters are consistent (a save from on_train_batch_end
        # with trainer.should_stop resumes into the wrong epoch), and stops the DDP ranks too.
        self._sigusr1_received = True
        os.kill(os.getpid(), signal.SIGTERM)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.saved_step != trainer.global_step:
            self.save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.stopped_by = (
                ("SIGUSR1", int(signal.SIGUSR1)) if self._sigusr1_received else ("SIGTERM", int(signal.SIGTERM))
            )
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state: optimizers, loops, callbacks
        self.saved_step = trainer.global_step
        if self.stopped_by:
            rank_zero_info(f"{self.stopped_by[0]}: saved {self.path} at step {trainer.global_step}.")
