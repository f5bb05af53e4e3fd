"""Nothing a user made is lost: atomic checkpoint files, exact resume, saves on preemption.

* :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file in the same folder,
  flushes it to disk, then renames it over the target (``os.replace`` is atomic on POSIX), so
  a process killed while saving leaves the previous checkpoint intact. Lightning's own
  ``TorchCheckpointIO`` writes into the target file directly.
* :class:`RandomStateCheckpoint` stores the Python, NumPy and torch (CPU and CUDA) random
  states of every rank in the checkpoint and restores them on resume; Lightning restores model,
  optimiser, LR scheduler, loop counters and callback states, but not random states, so without
  this a resumed run draws different reparameterisation noise and binarizations.
* :class:`PreemptionCheckpoint` saves ``last.ckpt`` when the job is told to stop: SIGTERM (which
  Lightning turns into a ``SIGTERMException`` at the next batch) or SIGUSR1 (what SLURM sends
  before a time limit; handled here unless Lightning's SLURM auto-requeue already is).
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
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities import rank_zero_info


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to ``.<name>.tmp-<pid>`` beside the target, fsync, then ``os.replace``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(temporary, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


def _random_state() -> dict[str, Any]:
    """Random states as tensors and plain numbers only, so that ``torch.load`` with
    ``weights_only=True`` (Lightning's default) accepts the checkpoint."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_random_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
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


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM or SIGUSR1, save ``<dirpath>/last.ckpt`` and stop cleanly.

    Args:
        dirpath: where ``last.ckpt`` goes (the run's checkpoint folder, so ``ckpt_path=last``
            resumes from it).
    """

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.sigusr1_received = False
        self._previous_sigusr1: Any = None

    @property
    def path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self._previous_sigusr1 = signal.signal(signal.SIGUSR1, self._on_sigusr1)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous_sigusr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_sigusr1)
            self._previous_sigusr1 = None

    def _on_sigusr1(self, signum: int, frame: Any) -> None:
        self.sigusr1_received = True  # acted on between batches, never inside a step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.sigusr1_received:
            self.sigusr1_received = False
            self._save(trainer, "SIGUSR1")
            trainer.should_stop = True

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self._save(trainer, "SIGTERM")

    def _save(self, trainer: L.Trainer, reason: str) -> None:
        trainer.save_checkpoint(self.path)
        rank_zero_info(f"{reason}: saved {self.path} at step {trainer.global_step}; resume with ckpt_path={self.path}")
