"""The examples of one split as a model sees them, outside a training loop (evaluation,
pictures from a checkpoint, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vae_zoo.errors import ConfigError

if TYPE_CHECKING:
    from vae_zoo.data.base import InMemoryDataModule


class SplitBatches:
    """Model-ready batches of one split, as often as needed, in the same order each time.

    Each pass yields what a Lightning step would get: the batch moved to ``device`` and passed
    through the datamodule's ``on_after_batch_transfer`` (uint8 -> float in [0, 1], fixed
    binarization and corruption of evaluation sets).

    Args:
        datamodule: the data, set up.
        split: ``test`` or ``val``.
        device: where the model is.
        max_examples: the first this many examples of the split only (None: all).
    """

    def __init__(
        self, datamodule: InMemoryDataModule, split: str, device: torch.device, max_examples: int | None = None
    ):
        if split not in ("test", "val"):
            raise ConfigError(f"The split to evaluate must be test or val, got {split!r}.")
        self.datamodule, self.split, self.device = datamodule, split, device
        total = len(datamodule.splits[split]["image"])
        self.num_examples = total if max_examples is None else min(max_examples, total)
        if self.num_examples < 2:
            raise ConfigError(
                f"The {split} split has {self.num_examples} example(s) to evaluate; at least two are needed."
            )

    def __call__(self, max_examples: int | None = None) -> Iterator[dict[str, Tensor]]:
        """One pass over the first ``max_examples`` (default: all ``num_examples``) examples."""
        limit = self.num_examples if max_examples is None else min(max_examples, self.num_examples)
        loader = self.datamodule.test_dataloader() if self.split == "test" else self.datamodule.val_dataloader()
        seen = 0
        for batch in loader:
            if seen >= limit:
                break
            batch = {key: value[: limit - seen].to(self.device) for key, value in batch.items()}
            seen += len(batch["image"])
            yield self.datamodule.on_after_batch_transfer(batch, 0)

    def first(self) -> dict[str, Tensor]:
        """The first batch."""
        return next(iter(self()))


def target_of(batch: dict[str, Tensor]) -> Tensor:
    """The clean image a reconstruction is scored against (``target`` for denoising data)."""
    return batch.get("target", batch["image"])
