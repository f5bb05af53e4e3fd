"""The console progress bar: Lightning's Rich bar, redrawn a few times a second."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Lightning's :class:`~lightning.pytorch.callbacks.RichProgressBar`, updated at most
    ``refresh_rate`` times a second during training.

    Lightning's bar redraws 100 times a second in a background thread and, after every batch,
    updates its task and reads every progress-bar metric again: 5 % of an MLP step on a 2-core
    CPU (BENCHMARKS.md, "Framework overhead"). Here it redraws ``refresh_rate`` times a second and
    a training batch updates the bar only when a redraw is due (and at the epoch's last batch),
    so the numbers shown are never older than one redraw.
    """

    def __init__(self, refresh_rate: int = 4, leave: bool = True, **kwargs: Any):
        super().__init__(refresh_rate=refresh_rate, leave=leave, **kwargs)
        self._next_update = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if now < self._next_update and batch_idx + 1 < self.total_train_batches:
            return
        self._next_update = now + 1.0 / self.refresh_rate
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
