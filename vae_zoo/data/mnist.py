"""MNIST from the standard IDX files, held in memory as uint8.

Files are looked for in torchvision's layout, ``<root>/MNIST/raw/`` (gzipped or extracted), so
a folder that ``torchvision.datasets.MNIST(root, download=True)`` filled works as it is. Missing
files are downloaded through torchvision when ``download`` is true and the machine is online;
otherwise :class:`DataNotFoundError` names the files, the folder and the official source.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

from vae_zoo.data.base import InMemoryDataModule, Split, split_at_random, try_download
from vae_zoo.errors import DataError, DataNotFoundError


# IDX type codes (LeCun et al.): 0x08 is unsigned byte, the only type MNIST uses.
_IDX_UBYTE = 0x08


def read_idx(path: Path) -> Tensor:
    """Read an IDX file (optionally gzipped) into a uint8 tensor.

    Written here rather than calling torchvision's ``read_sn3_pascalvincent_tensor`` because
    that one reads only extracted files, and extracting needs a writable data folder (a shared,
    read-only copy of the ``.gz`` files should work as it is).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype_code != _IDX_UBYTE:
        raise DataError(f"{path} is not an unsigned-byte IDX file (header {data[:4].hex()}).")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {np.prod(shape)} values, got {array.size}.")
    return torch.from_numpy(array.reshape(shape).copy())


class MNISTDataModule(InMemoryDataModule):
    """MNIST (LeCun et al. 1998): 60k train (of which ``val_size`` are held out for
    validation with a fixed seed) and 10k test images, 28x28 grey, with class labels.

    Args:
        root: folder holding ``MNIST/raw/`` (torchvision's layout).
        download: try to download missing files (needs internet).
        val_size: number of training images held out as the validation split.
        **kwargs: see :class:`InMemoryDataModule` (``binarize="dynamic"`` for the usual
            binarized-MNIST likelihood experiments).
    """

    folder = "MNIST"
    torchvision_class = torchvision.datasets.MNIST
    source = "http://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"
    files = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        val_size: int = 5000,
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        **kwargs,
    ):
        super().__init__(image_size=image_size, channels=channels, num_classes=num_classes, **kwargs)
        self.root = Path(root).expanduser()
        self.download, self.val_size = download, val_size

    @property
    def raw_folder(self) -> Path:
        return self.root / self.folder / "raw"

    def _find(self, name: str) -> Path | None:
        for candidate in (self.raw_folder / f"{name}.gz", self.raw_folder / name):
            if candidate.is_file():
                return candidate
        return None

    def missing_files(self) -> list[str]:
        names = [name for pair in self.files.values() for name in pair]
        return [f"{name}.gz" for name in names if self._find(name) is None]

    def prepare_data(self) -> None:
        """Check the files are there; download them if allowed, else fail with instructions."""
        missing = self.missing_files()
        if not missing:
            return
        problem = try_download(
            lambda: [self.torchvision_class(str(self.root), train=train, download=True) for train in (True, False)],
            self.download,
        )
        if missing := self.missing_files():
            raise DataNotFoundError(
                f"{self.folder} files not found in {self.raw_folder.resolve()}: "
                f"{', '.join(missing)}. {problem} "
                f"Put the files from {self.source} in that folder (gzipped or extracted), "
                f"or point data.root at the folder that contains {self.folder}/raw/."
            )

    def load_splits(self) -> dict[str, Split]:
        self.prepare_data()
        loaded = {}
        for split, (images_name, labels_name) in self.files.items():
            images = read_idx(self._find(images_name)).unsqueeze(1)  # (N, 1, 28, 28)
            labels = read_idx(self._find(labels_name)).long()
            loaded[split] = {"image": images, "label": labels}
        held_out = split_at_random(loaded["train"], {"val": self.val_size, "train": None}, self.seed)
        return {"train": held_out["train"], "val": held_out["val"], "test": loaded["test"]}


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Xiao et al. 2017): MNIST's format and sizes (60k train, of which
    ``val_size`` are held out, and 10k test 28x28 grey images) with 10 classes of clothing.

    Files are looked for in torchvision's layout, ``<root>/FashionMNIST/raw/``. Arguments as
    :class:`MNISTDataModule`.
    """

    folder = "FashionMNIST"
    torchvision_class = torchvision.datasets.FashionMNIST
    source = "https://github.com/zalandoresearch/fashion-mnist (data/fashion/)"
