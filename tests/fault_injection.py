"""Faults a test injects into a real run, named by ``_target_`` from a config override (the
tests folder is on ``PYTHONPATH`` for the subprocesses that use them)."""

from __future__ import annotations

import io
import os
import time
from typing import Any

import lightning as L
import torch

from vae_zoo.run.checkpointing import AtomicCheckpointIO


class SlowCheckpointIO(AtomicCheckpointIO):
    """The real atomic checkpoint writer, with the bytes trickling into the temporary file over
    ``seconds``, so that a kill can land in the middle of a save."""

    def __init__(self, seconds: float = 0.4, pieces: int = 8):
        super().__init__()
        self.seconds, self.pieces = seconds, pieces

    def write(self, checkpoint: dict[str, Any], file: Any) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        size = len(data) // self.pieces + 1
        for start in range(0, len(data), size):
            file.write(data[start : start + size])
            file.flush()
            os.fsync(file.fileno())
            time.sleep(self.seconds / self.pieces)


class NaNAtStep(L.Callback):
    """Fill the training batch of global step ``step`` with NaN: its loss is NaN, and the update
    it makes turns the weights NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            batch["image"].fill_(float("nan"))


class SignalAtStep(L.Callback):
    """Send this process ``signal_name`` (e.g. SIGUSR1, what SLURM sends before a time limit)
    at the start of global step ``step``, as a scheduler would from outside."""

    def __init__(self, step: int, signal_name: str = "SIGUSR1"):
        self.step, self.signal_name = step, signal_name

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            import signal

            os.kill(os.getpid(), getattr(signal, self.signal_name))
