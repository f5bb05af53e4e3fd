"""CIFAR-10 (Krizhevsky 2009) from its Python pickle batches, held in memory as uint8.

Files are read in torchvision's layout, ``<root>/cifar-10-batches-py/`` with ``data_batch_1``
... ``data_batch_5`` and ``test_batch`` (what ``cifar-10-python.tar.gz`` unpacks to), so a
folder that ``torchvision.datasets.CIFAR10(root, download=True)`` filled works as it is.
``torchvision.datasets.CIFAR10`` is used to download but not to read: it refuses any batch
file whose MD5 differs from the original (a re-pickled or subset copy), and the two arrays
we need take a few lines to read.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

from vae_zoo.data.base import InMemoryDataModule, Split, split_at_random, try_download
from vae_zoo.errors import DataError, DataNotFoundError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    """Read one CIFAR pickle batch: a dict with ``b"data"``, (N, 3072) uint8 rows of 1024 red,
    then green, then blue values of a 32 x 32 image in row-major order, and ``b"labels"``.

    Unpickling runs code from the file: read only CIFAR files you trust (as with torchvision).

    Returns:
        ``(images, labels)``: (N, 3, 32, 32) uint8 and (N,) int64 in [0, 10).
    """
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path} is not a CIFAR-10 batch (a pickled dict with b'data' and b'labels'): {error!r}.") from error
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise DataError(f"{path}: expected data (N, 3072) and labels (N,), got {data.shape} and {labels.shape}.")
    if len(labels) and not (labels.min() >= 0 and labels.max() < len(CLASSES)):
        raise DataError(f"{path}: labels must be in [0, {len(CLASSES)}), got [{labels.min()}, {labels.max()}].")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


class CIFAR10DataModule(InMemoryDataModule):
    """CIFAR-10: 50k train (of which ``val_size`` are held out for validation with a fixed
    seed) and 10k test colour images, 32x32, with class labels (:data:`CLASSES`).

    Args:
        root: folder holding ``cifar-10-batches-py/`` (torchvision's layout).
        download: try to download missing files (needs internet).
        val_size: number of training images held out as the validation split.
        **kwargs: see :class:`InMemoryDataModule`.
    """

    folder = "cifar-10-batches-py"
    source = "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz)"
    files = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        val_size: int = 5000,
        image_size: int = 32,
        channels: int = 3,
        num_classes: int = len(CLASSES),
        **kwargs,
    ):
        super().__init__(image_size=image_size, channels=channels, num_classes=num_classes, **kwargs)
        self.root = Path(root).expanduser()
        self.download, self.val_size = download, val_size

    @property
    def batch_folder(self) -> Path:
        return self.root / self.folder

    def missing_files(self) -> list[str]:
        return [name for names in self.files.values() for name in names if not (self.batch_folder / name).is_file()]

    def prepare_data(self) -> None:
        """Check the files are there; download them if allowed, else fail with instructions."""
        missing = self.missing_files()
        if not missing:
            return
        problem = try_download(lambda: torchvision.datasets.CIFAR10(str(self.root), train=True, download=True), self.download)
        if missing := self.missing_files():
            raise DataNotFoundError(
                f"CIFAR-10 files not found in {self.batch_folder.resolve()}: {', '.join(missing)}. {problem} "
                f"Download {self.source} and unpack it in {self.root.resolve()}, "
                f"or point data.root at the folder that contains {self.folder}/."
            )

    def load_splits(self) -> dict[str, Split]:
        self.prepare_data()
        loaded = {}
        for split, names in self.files.items():
            images, labels = zip(*(read_cifar_batch(self.batch_folder / name) for name in names))
            loaded[split] = {"image": torch.cat(images), "label": torch.cat(labels)}
        held_out = split_at_random(loaded["train"], {"val": self.val_size, "train": None}, self.seed)
        return {"train": held_out["train"], "val": held_out["val"], "test": loaded["test"]}
