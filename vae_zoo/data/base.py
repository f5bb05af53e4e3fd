"""Datasets held in memory as uint8 tensors and served a batch at a time.

Each split is a dict of tensors with the same first dimension: ``image`` (N, C, S, S) uint8,
plus ``label`` (N,) and/or ``factors`` (N, K) int64 where the dataset has them. A batch is one
advanced-indexing operation on those tensors (no per-item ``__getitem__``, no per-item
collate). It reaches the device as uint8 (4x less to copy than float32); the conversion to
float in [0, 1] and any binarization happen there, in :meth:`on_after_batch_transfer`.

Batches are dicts: ``{"image": float (B, C, S, S) in [0, 1], "label": ..., "factors": ...}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from vae_zoo.errors import ConfigError

Split = dict[str, Tensor]
BINARIZE_MODES = (None, "static", "dynamic")


class TensorBatches(Dataset):
    """A dataset whose items are whole batches: ``dataset[indices]`` indexes every tensor once."""

    def __init__(self, tensors: Split):
        sizes = {len(t) for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"All tensors of a split need the same length, got {sizes}.")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, indices: Tensor) -> Split:
        return {key: t[indices] for key, t in self.tensors.items()}


class IndexBatchSampler(Sampler[Tensor]):
    """Yields index tensors of ``batch_size`` (a shuffled permutation per epoch, or in order).

    Torch's ``BatchSampler(RandomSampler)`` builds each batch as a Python list one index at a
    time; this one slices a single ``randperm``. Shuffling draws from the global torch RNG, so
    ``seed_everything`` makes the order reproducible.
    """

    def __init__(self, num_items: int, batch_size: int, shuffle: bool, drop_last: bool = False):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.num_items, self.batch_size = num_items, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_items // self.batch_size
        return -(-self.num_items // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        order = torch.randperm(self.num_items) if self.shuffle else torch.arange(self.num_items)
        batches = order.split(self.batch_size)
        if self.drop_last and len(batches) and len(batches[-1]) < self.batch_size:
            batches = batches[:-1]
        return iter(batches)


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize (N, C, H, W) uint8 images to size x size once (bilinear, antialiased)."""
    if images.shape[-2:] == (size, size):
        return images
    resized = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round().clamp(0, 255).to(torch.uint8)


class InMemoryDataModule(L.LightningDataModule):
    """Base for datasets that fit in memory. Subclasses implement :meth:`load_splits`.

    Args:
        image_size: side of the square images served (resized once at load if the source
            differs).
        channels: image channels the data has (checked against what is loaded).
        num_classes: number of label classes (``label`` in each batch), for conditional
            models; None when the data has no labels.
        batch_size: training batch size *per device* (under DDP the global batch is
            ``batch_size * world_size``).
        eval_batch_size: batch size for validation and test (default: ``batch_size``).
        binarize: ``None`` (grey values in [0, 1]), ``"static"`` (threshold at 0.5 once) or
            ``"dynamic"`` (a fresh Bernoulli sample of every training batch, Salakhutdinov &
            Murray 2008; validation and test are binarized once with a fixed seed so their
            numbers are stable).
        seed: seed for any randomness in building the splits.
        pin_memory: pin host memory for faster transfer to a GPU.
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        num_classes: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        binarize: str | None = None,
        seed: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        if binarize not in BINARIZE_MODES:
            raise ConfigError(f"data.binarize must be one of {BINARIZE_MODES}, got {binarize!r}.")
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.binarize, self.seed, self.pin_memory = binarize, seed, pin_memory
        self.splits: dict[str, Split] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def load_splits(self) -> dict[str, Split]:
        """Return ``{"train": split, "val": split, "test": split}`` with uint8 images."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        splits = self.load_splits()
        for name, split in splits.items():
            images = resize_uint8(split["image"], self.image_size)
            if images.dtype != torch.uint8 or images.shape[1] != self.channels:
                raise ConfigError(
                    f"{type(self).__name__} split {name!r} has images of shape "
                    f"{tuple(images.shape[1:])} and dtype {images.dtype}; expected uint8 with "
                    f"{self.channels} channels (data.channels)."
                )
            split["image"] = images
        if self.binarize is not None:
            generator = torch.Generator().manual_seed(self.seed)
            for name, split in splits.items():
                if self.binarize == "static" or name != "train":
                    split["image"] = binarize_uint8(split["image"], self.binarize, generator)
        self.splits = splits

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        if self.splits is None:
            self.setup()
        dataset = TensorBatches(self.splits[split])
        return DataLoader(
            dataset,
            sampler=IndexBatchSampler(len(dataset), batch_size, shuffle=shuffle),
            batch_size=None,  # the sampler yields whole batches
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: Mapping[str, Tensor], dataloader_idx: int) -> Split:
        """On the device: uint8 -> float in [0, 1]; dynamic binarization of training batches."""
        batch = dict(batch)
        image = batch["image"].float().div_(255.0)
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            image = torch.bernoulli(image)
        batch["image"] = image
        return batch


def binarize_uint8(images: Tensor, mode: str, generator: torch.Generator) -> Tensor:
    """Binarize uint8 images to {0, 255}: threshold at 128 (``static``) or one Bernoulli
    sample with p = pixel / 255 (``dynamic``, used for fixed evaluation sets)."""
    if mode == "static":
        return (images >= 128).to(torch.uint8) * 255
    probs = images.float() / 255.0
    return torch.bernoulli(probs, generator=generator).to(torch.uint8) * 255
