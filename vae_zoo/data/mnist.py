"""MNIST from the standard IDX files, held in memory as uint8.

Files are looked for in torchvision's layout, ``<root>/MNIST/raw/`` (gzipped or extracted), so
a folder that ``torchvision.datasets.MNIST(root, download=True)`` filled works as it is. Missing
files are downloaded through torchvision when ``download`` is true and the machine is online;
otherwise :class:`DataNotFoundError` names the files, the folder and the official source. A
file that is there but damaged (truncated, not gzip data, not an IDX file, images and labels of
different counts) gives a :class:`DataError` naming it and saying how to replace it.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

from vae_zoo.data.base import InMemoryDataModule, Split, data_folder, split_at_random, try_download
from vae_zoo.errors import DataError, DataNotFoundError

# IDX type codes (LeCun et al.): 0x08 is unsigned byte, the only type MNIST uses.
_IDX_UBYTE = 0x08
MNIST_SOURCE = "http://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"


def fetch_again(source: str) -> str:
    """What to do about a damaged file: the sentence that ends its error message."""
    return f"Delete it and run again with data.download=true, or copy the file again from {source}."


def read_idx(path: Path, source: str = MNIST_SOURCE) -> Tensor:
    """Read an IDX file (gzipped if its name ends in ``.gz``) into a uint8 tensor of the
    shape its header gives.

    Written here rather than calling torchvision's ``read_sn3_pascalvincent_tensor`` because
    that one reads only extracted files, and extracting needs a writable data folder (a shared,
    read-only copy of the ``.gz`` files should work as it is).

    Args:
        path: the file.
        source: where the file can be downloaded again, for the error message.

    Raises:
        DataError: the file cannot be read or decompressed (truncated, not gzip data, corrupt),
            its header is not an unsigned-byte IDX header, or it holds another number of values
            than the header's shape.
    """
    fix = fetch_again(source)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except EOFError as error:  # gzip: the stream stops before its end marker
        raise DataError(f"{path} is truncated: its gzip data ends early. {fix}") from error
    except gzip.BadGzipFile as error:  # before OSError, of which it is a kind
        raise DataError(f"{path} is not valid gzip data ({error}). {fix}") from error
    except zlib.error as error:
        raise DataError(f"{path} is corrupt: its gzip data does not decompress ({error}). {fix}") from error
    except OSError as error:
        raise DataError(
            f"{path} cannot be read ({error.strerror or error}). Make it readable, or delete it and run again with data.download=true."
        ) from error
    if len(data) < 4:
        raise DataError(
            f"{path} is not an IDX file: it holds {len(data)} bytes, fewer than the 4 of an IDX header. {fix}"
        )
    zero, dtype_code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype_code != _IDX_UBYTE or ndim == 0:
        raise DataError(
            f"{path} is not an unsigned-byte IDX file (header {data[:4].hex()}, expected 0000 08 then the number of dimensions). {fix}"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"{path} is truncated: it holds {len(data)} bytes, fewer than its {header_size}-byte header. {fix}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)
    if len(data) - header_size != expected:
        problem = "is truncated" if len(data) - header_size < expected else "has extra bytes"
        raise DataError(
            f"{path} {problem}: its header gives shape {shape}, {expected} values, but it holds "
            f"{len(data) - header_size}. {fix}"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header_size)
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
    source = MNIST_SOURCE
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
        self.root = data_folder(root, holds=f"{self.folder}/raw/")
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
            self.root,
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
            images_path, labels_path = self._find(images_name), self._find(labels_name)
            images, labels = read_idx(images_path, self.source), read_idx(labels_path, self.source)
            fix = fetch_again(self.source)
            if images.ndim != 3:
                raise DataError(
                    f"{images_path} holds an array of shape {tuple(images.shape)}, not (N, height, width) images. {fix}"
                )
            if labels.shape != (len(images),):
                raise DataError(
                    f"{labels_path} holds labels of shape {tuple(labels.shape)}, but {images_path.name} holds "
                    f"{len(images)} images: expected ({len(images)},). {fix}"
                )
            loaded[split] = {"image": images.unsqueeze(1), "label": labels.long()}  # (N, 1, 28, 28), (N,)
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
