"""Datasets held in memory as uint8 tensors and served a batch at a time.

Each split is a dict of tensors with the same first dimension: ``image`` (N, C, S, S) uint8,
plus ``label`` (N,) int64, ``attributes`` (N, K) uint8 in {0, 1} and/or ``factors`` (N, K)
int64 where the dataset has them. The tensors may be memory-mapped views of a cache file
(:mod:`vae_zoo.data.image_cache`); nothing here copies a whole split. A batch is one
advanced-indexing operation on those tensors (no per-item ``__getitem__``, no per-item
collate). It reaches the device as uint8 (4x less to copy than float32); the conversion to
float in [0, 1], any binarization and any corruption happen there, in
:meth:`InMemoryDataModule.on_after_batch_transfer`.

The batch contract, as the model sees it after the transfer:

* ``batch["image"]``: float32 (B, C, S, S) in [0, 1], the model's **input**.
* ``batch["target"]``: float32 (B, C, S, S) in [0, 1], present only when a corruption is
  configured (``data.corruption``, denoising autoencoders): the clean image the
  reconstruction is scored against, while ``image`` holds the corrupted one. Without a
  corruption there is no ``target`` key and the input is also the target, so models score
  against ``batch.get("target", batch["image"])``. The corruption applies in every stage, so
  the validation and test ELBO measure the objective that is trained; validation and test
  images are corrupted once, at setup, with a fixed seed (stable numbers, like the
  binarization of evaluation sets), training batches afresh on the device every step.
* ``batch["label"]``: int64 (B,) class indices; ``batch["attributes"]``: uint8 (B, K) 0/1
  multi-hot attributes (CelebA); ``batch["factors"]``: int64 (B, K) ground-truth factor
  classes (dSprites), each where the dataset has them. :attr:`InMemoryDataModule.condition_key`
  names the one a conditional model reads.

Under DDP the batches are sharded by :class:`IndexBatchSampler` itself (each rank a disjoint
part of the data), so the trainer must not wrap it: ``trainer.use_distributed_sampler=false``.
"""

from __future__ import annotations

import numbers
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from vae_zoo.data.corruption import Corruption, check_corruption
from vae_zoo.data.sampler import IndexBatchSampler, InOrderBatchSampler, TensorBatches
from vae_zoo.errors import ConfigError
from vae_zoo.support.lightning_internals import replaces_batch_sampler

Split = dict[str, Tensor]
BINARIZE_MODES = (None, "static", "dynamic")


def data_folder(root: str | os.PathLike, holds: str = "the data", setting: str = "data.root") -> Path:
    """``root`` with ``~`` expanded, checked to be a folder or a path a folder can be made at.

    Args:
        root: the configured folder.
        holds: what the folder should hold, for the error message.
        setting: the config key of ``root``, for the error message.

    Raises:
        ConfigError: ``root``, or the nearest part of it that exists, is not a folder.
    """
    path = Path(root).expanduser()
    # os.path.exists: False (rather than an exception) for a path it may not look into
    existing = next((p for p in (path, *path.parents) if os.path.exists(p)), None)
    if existing is not None and not os.path.isdir(existing):
        where = "is a file" if existing == path else f"is inside {existing}, which is a file"
        raise ConfigError(f"{setting}={path} {where}, not a folder. Point {setting} at the folder that holds {holds}.")
    return path


def _check_count(value: Any, setting: str, example: str) -> None:
    """A count from the config: an integer >= 1 (a bool or a float is refused, not rounded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{setting} must be a whole number >= 1, got {value!r}. Set e.g. {setting}={example}.")


def try_download(download: Callable[[], Any], enabled: bool, root: str | Path) -> str:
    """Run ``download`` if ``enabled``; return the sentence an error message should give if the
    files are still missing afterwards (why they are: download off, failed, or incomplete).

    A failed download leaves no trace: the folders it made under ``root`` (torchvision makes
    ``<root>/celeba``, ``<root>/MNIST/raw`` before it fetches anything), and ``root`` itself
    if it was not there, are removed again when they hold no file."""
    if not enabled:
        return "Download is off (data.download=false)."
    root = Path(root)
    existed = root.is_dir()
    before = set(root.iterdir()) if existed else set()
    try:
        download()
    except Exception as error:  # any network/IO failure: the caller reports it with instructions
        made = [path for path in (root.iterdir() if root.is_dir() else ()) if path not in before]
        for folder in [*made, *([] if existed else [root])]:
            if folder.is_dir() and not any(path.is_file() for path in folder.rglob("*")):
                shutil.rmtree(folder, ignore_errors=True)
        return f"Download failed ({type(error).__name__}: {error})."
    return "The download finished but did not produce them."


def split_at_random(split: Split, sizes: Mapping[str, int | None], seed: int) -> dict[str, Split]:
    """Cut a split into named parts at random, reproducibly.

    One permutation of the items is drawn from ``seed`` and cut into consecutive pieces of the
    given sizes, in the order of ``sizes``. One size may be None: all the items left over.
    Items beyond the requested sizes are left out.

    Args:
        split: tensors with a common first dimension N.
        sizes: part name -> number of items (or None).
        seed: seed of the permutation.

    Raises:
        ConfigError: the sizes are negative, zero, or add up to more than N.
    """
    total = len(next(iter(split.values())))
    fixed = sum(size for size in sizes.values() if size is not None)
    if any(size is not None and size < 1 for size in sizes.values()) or fixed > total - (None in sizes.values()):
        parts = ", ".join(f"{name}={'rest' if size is None else size}" for name, size in sizes.items())
        raise ConfigError(
            f"Cannot cut {total} items into {parts}: each part needs at least one item. Change the split sizes in the data config."
        )
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    parts, start = {}, 0
    for name, size in sizes.items():
        size = total - fixed if size is None else size
        parts[name] = {key: tensor[order[start : start + size]] for key, tensor in split.items()}
        start += size
    return parts


# Images converted to float at a time when a whole split is transformed once (resizing,
# corrupting evaluation sets): bounds the float copy to about 200 MB at 64x64x3.
_CHUNK = 4096


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize (N, C, H, W) uint8 images to (N, C, size, size) uint8 once (bilinear,
    antialiased), a chunk of images at a time."""
    if images.shape[-2:] == (size, size):
        return images
    resized = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        resized[start : start + _CHUNK] = chunk.round_().clamp_(0, 255)
    return resized


def corrupt_uint8(images: Tensor, corruption: Corruption, generator: torch.Generator) -> Tensor:
    """Apply ``corruption`` to (N, C, H, W) uint8 images once, a chunk at a time; the result
    is (N, C, H, W) uint8, rounded to the nearest level like any stored image."""
    corrupted = torch.empty_like(images)
    for start in range(0, len(images), _CHUNK):
        clean = images[start : start + _CHUNK].float().div_(255.0)
        corrupted[start : start + _CHUNK] = corruption(clean, generator=generator).mul_(255.0).round_()
    return corrupted


class InMemoryDataModule(L.LightningDataModule):
    """Base for datasets served from uint8 tensors. Subclasses implement :meth:`load_splits`.

    Constructors check and store settings and read no data: of the disk, they look only at
    whether ``data.root`` is a folder (:func:`data_folder`). Files are checked in
    :meth:`prepare_data` and read in :meth:`setup`.

    Args:
        image_size: side of the square images served (resized once at load if the source
            differs).
        channels: image channels the data has (checked against what is loaded).
        num_classes: size of the condition a conditional model reads (the number of label
            classes, or of attributes for CelebA); None when the data has none.
        batch_size: training batch size *per device* (under DDP the global batch is
            ``batch_size * world_size``).
        eval_batch_size: batch size for validation and test (default: ``batch_size``).
        binarize: ``None`` (grey values in [0, 1]), ``"static"`` (threshold at 0.5 once) or
            ``"dynamic"`` (a fresh Bernoulli sample of every training batch, Salakhutdinov &
            Murray 2008; validation and test are binarized once with a fixed seed so their
            numbers are stable).
        corruption: train a denoising autoencoder: None (off) or a :class:`~vae_zoo.data.corruption.Corruption`
            (``GaussianNoise(std)``: additive noise, clipped to [0, 1]; ``PixelMask(fraction)``:
            that fraction of pixels set to 0); see :mod:`vae_zoo.data.corruption` and the batch
            contract above.
        seed: seed for any randomness in building the splits (and corrupting the evaluation
            sets); the training order follows the run's seed instead.
        pin_memory: pin host memory for faster transfer to a GPU.
        on_device: hold the uint8 splits in the accelerator's memory (a GPU) and gather each
            batch there: no copy per batch (MNIST's 70,000 images take 55 MB). Ignored, with a
            warning, when the run is on the CPU, where the data already is.
        train_classes: keep only the examples with these labels in the train and val splits
            (None: all). The test split keeps every class, so a model trained on the "normal"
            classes can be scored on the held-out ones (anomaly detection, e.g.
            ``data.train_classes=[0,1,2,3,4,5,6,8]`` then ``evaluate.ood.classes=[7,9]``).
    """

    #: The batch key holding what a conditional model is given, and how it is encoded.
    condition_key: str = "label"
    condition_encoding: str = "one_hot"

    def __init__(
        self,
        image_size: int,
        channels: int,
        num_classes: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        binarize: str | None = None,
        corruption: Mapping[str, Any] | Corruption | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        on_device: bool = False,
        train_classes: Sequence[int] | None = None,
    ):
        super().__init__()
        if binarize not in BINARIZE_MODES:
            raise ConfigError(f"data.binarize must be one of {BINARIZE_MODES}, got {binarize!r}.")
        _check_count(batch_size, "data.batch_size", "128")
        if eval_batch_size is not None:  # None: the training batch size
            _check_count(eval_batch_size, "data.eval_batch_size", "1000 (or null for data.batch_size)")
        _check_count(image_size, "data.image_size", "32")
        _check_count(channels, "data.channels", "3 (1 for grey images)")
        if num_classes is not None:
            _check_count(num_classes, "data.num_classes", "10 (or null for data without labels)")
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.binarize, self.seed, self.pin_memory, self.on_device = binarize, seed, pin_memory, on_device
        self.corruption = check_corruption(corruption)
        self.train_classes = None if train_classes is None else [int(label) for label in train_classes]
        if self.train_classes is not None and not self.train_classes:
            raise ConfigError(
                "data.train_classes is empty: list the labels to train on, e.g. [0,1,2], or null for all."
            )
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
        generator = torch.Generator().manual_seed(self.seed)
        if self.binarize is not None:
            for name, split in splits.items():
                if self.binarize == "static" or name != "train":
                    split["image"] = binarize_uint8(split["image"], self.binarize, generator)
        if self.corruption is not None:
            for name, split in splits.items():
                if name != "train":
                    split["corrupted"] = corrupt_uint8(split["image"], self.corruption, generator)
        if self.train_classes is not None:  # last: the test split is binarized and corrupted as without it
            splits = self._keep_train_classes(splits)
        self.splits = splits

    def training_images_once(self) -> Tensor:
        """The training split's uint8 images as one fixed copy: under ``binarize=dynamic``
        binarized once with a fixed seed (``seed + 1``), as the evaluation sets are; otherwise as
        served. For work that needs the training set once, e.g. a second stage's cached codes."""
        if self.splits is None:
            self.setup()
        images = self.splits["train"]["image"]
        if self.binarize != "dynamic":
            return images
        return binarize_uint8(images, "dynamic", torch.Generator().manual_seed(self.seed + 1))

    def _keep_train_classes(self, splits: dict[str, Split]) -> dict[str, Split]:
        """The train and val splits without the examples whose label is not in ``train_classes``
        (a copy of what is kept; the test split is left as it is)."""
        if "label" not in splits["train"]:
            raise ConfigError(
                f"data.train_classes needs labels, and {type(self).__name__} has none. Set data.train_classes=null."
            )
        present = splits["train"]["label"].unique().tolist()
        missing = sorted(set(self.train_classes) - set(present))
        if missing:
            raise ConfigError(
                f"data.train_classes={self.train_classes} names labels the training split does not have: {missing} (it has {present})."
            )
        kept = {}
        for name, split in splits.items():
            if name in ("train", "val"):
                keep = torch.isin(split["label"], torch.tensor(self.train_classes, dtype=split["label"].dtype))
                split = {key: tensor[keep] for key, tensor in split.items()}
            kept[name] = split
        return kept

    def _check_trainer_leaves_sampler_alone(self) -> None:
        # Lightning would replace our sampler by a DistributedSampler of single items, which
        # breaks batching. The flag is only reachable through a private attribute.
        trainer = self.trainer
        if trainer is not None and replaces_batch_sampler(trainer):
            raise ConfigError(
                "The data shards its batches across DDP ranks itself; set "
                "trainer.use_distributed_sampler=false (conf/trainer/default.yaml does)."
            )

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        if self.splits is None:
            self.setup()
        self._check_trainer_leaves_sampler_alone()
        on_device = self._move_splits_to_the_device()
        dataset = TensorBatches(self.splits[split])
        overfitting = getattr(self.trainer, "overfit_batches", 0) > 0  # the same first batches every epoch
        sampler = (
            IndexBatchSampler(len(dataset), batch_size, shuffle=True)
            if shuffle and not overfitting
            else InOrderBatchSampler(len(dataset), batch_size)
        )
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,  # the sampler yields whole batches
            pin_memory=self.pin_memory and not on_device,
            # DataLoader draws a worker base seed at every iter() from this generator, or else
            # from the global RNG, which would shift the model's random stream by one draw per
            # epoch and make a resumed run differ from an uninterrupted one.
            generator=torch.Generator(),
        )

    def _move_splits_to_the_device(self) -> bool:
        """With ``on_device``, move the splits to the trainer's accelerator once; True if they
        are there."""
        if not self.on_device:
            return False
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type == "cpu":
            if not getattr(self, "_warned_on_device", False):
                rank_zero_warn("data.on_device=true is ignored: the run is on the CPU, where the data already is.")
                self._warned_on_device = True
            return False
        self.splits = {name: {key: t.to(device) for key, t in split.items()} for name, split in self.splits.items()}
        return True

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Lightning's move to ``device``, skipped when the batch is already there (a CPU run,
        ``data.on_device``): walking the batch to move nothing cost 2 % of an MLP step."""
        if isinstance(batch, Mapping) and all(isinstance(t, Tensor) and t.device == device for t in batch.values()):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Mapping[str, Tensor], dataloader_idx: int) -> Split:
        """On the device: uint8 -> float in [0, 1]; dynamic binarization of training batches;
        with a corruption, the clean image moves to ``target`` and ``image`` is corrupted."""
        batch = dict(batch)
        image = batch["image"].float().div_(255.0)
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            image = torch.bernoulli(image)
        if self.corruption is not None:
            batch["target"] = image
            if "corrupted" in batch:  # validation and test: corrupted once at setup
                image = batch.pop("corrupted").float().div_(255.0)
            else:
                image = self.corruption(image)
        batch["image"] = image
        return batch


def binarize_uint8(images: Tensor, mode: str, generator: torch.Generator) -> Tensor:
    """Binarize uint8 images to {0, 255}: threshold at 128 (``static``) or one Bernoulli
    sample with p = pixel / 255 (``dynamic``, used for fixed evaluation sets)."""
    if mode == "static":
        return (images >= 128).to(torch.uint8) * 255
    probs = images.float() / 255.0
    return torch.bernoulli(probs, generator=generator).to(torch.uint8) * 255
