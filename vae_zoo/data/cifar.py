"""CIFAR-10 (Krizhevsky 2009) from its Python pickle batches, held in memory as uint8.

Files are read in torchvision's layout, ``<root>/cifar-10-batches-py/`` with ``data_batch_1``
... ``data_batch_5`` and ``test_batch`` (what ``cifar-10-python.tar.gz`` unpacks to), so a
folder that ``torchvision.datasets.CIFAR10(root, download=True)`` filled works as it is.
``torchvision.datasets.CIFAR10`` is used to download but not to read: it refuses any batch
file whose MD5 differs from the original (a re-pickled or subset copy), and the two arrays
we need take a few lines to read.

The batches are pickles, and a plain ``pickle.load`` runs whatever code a file asks for before
anything can check it. They are read with :class:`CIFARUnpickler` instead, which builds only
what a CIFAR-10 batch holds (dicts, lists, bytes, numbers and numpy arrays of numbers) and
refuses any other global with a :class:`~vae_zoo.errors.DataError`, so loading a crafted file
runs no code from it.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor

from vae_zoo.data.base import InMemoryDataModule, Split, data_folder, split_at_random, try_download
from vae_zoo.errors import DataError, DataNotFoundError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz)"
_FIX = f"Delete it and run again with data.download=true, or download CIFAR-10 again from {SOURCE}."

# numpy 2 renamed core to _core (numpy 1.26 has a _core too, without multiarray)
_multiarray = importlib.import_module(
    "numpy._core.multiarray" if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else "numpy.core.multiarray"
)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as a pickle uses it: Python 3 writes ``bytes`` under protocols 0-2
    (the CIFAR batches' protocol) as ``_codecs.encode(<str>, "latin1")``. Only that is done."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"_codecs.encode({type(text).__name__}, {encoding!r}) is not how a pickle stores bytes"
        )
    return text.encode("latin1")


class CIFARUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR-10 batch holds, and so runs no code from the
    file (torchvision's own reader calls a plain ``pickle.load``, which does).

    Dicts, lists, strings, bytes and numbers need no global. The only globals admitted are
    numpy's array reconstruction (``numpy.core.multiarray._reconstruct`` as numpy 1 and the
    original Python 2 batches name it, ``numpy._core.multiarray._reconstruct`` as numpy 2
    does; ``numpy.ndarray``; ``numpy.dtype``; ``multiarray.scalar`` for a numpy number) and
    ``_codecs.encode`` restricted to ``(str, "latin1")``, which is how Python 3 pickles
    ``bytes`` under protocol 2. Each builds data from the values the pickle gives it and
    calls nothing else. Any other global raises :class:`DataError` before it is imported.
    """

    ADMITTED: dict[tuple[str, str], Any] = {
        **{
            (module, name): getattr(_multiarray, name)
            for module in ("numpy.core.multiarray", "numpy._core.multiarray")
            for name in ("_reconstruct", "scalar")
        },
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")  # the original batches were pickled by Python 2
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ADMITTED[module, name]
        except KeyError:
            raise DataError(
                f"{self.path} is not a CIFAR-10 batch: its pickle refers to {module}.{name}, which "
                f"a CIFAR-10 batch never holds, so it was refused and nothing in the file ran. {_FIX}"
            ) from None


def _integer_array(value: Any, path: Path, key: str, dtype: type) -> np.ndarray:
    """``value``, a list or numpy array of integers, as a ``dtype`` array. Anything else (an
    object, float or structured array, a list of other things, values ``dtype`` cannot hold)
    is a DataError."""
    try:
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (TypeError, ValueError) as error:  # e.g. a ragged list
        raise DataError(
            f"{path} is not a CIFAR-10 batch: {key} is not an array of integers ({error}). {_FIX}"
        ) from error
    # An object array would hold arbitrary objects; np.asarray([]) is float64, so an empty list passes.
    if array.dtype.kind not in "ui" and (isinstance(value, np.ndarray) or array.size):
        raise DataError(f"{path} is not a CIFAR-10 batch: {key} holds {array.dtype} values, not integers. {_FIX}")
    if array.size and (array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max):
        raise DataError(
            f"{path} is not a CIFAR-10 batch: {key} holds values in [{array.min()}, {array.max()}], "
            f"outside the range of {np.dtype(dtype).name}. {_FIX}"
        )
    return array.astype(dtype, copy=False)


def read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    """Read one CIFAR pickle batch: a dict with ``b"data"``, (N, 3072) uint8 rows of 1024 red,
    then green, then blue values of a 32 x 32 image in row-major order, and ``b"labels"``.

    The file is unpickled with :class:`CIFARUnpickler`, so no code from it runs: a pickle that
    asks for anything but numpy arrays (besides plain dicts, lists, bytes and numbers) is
    refused.

    Returns:
        ``(images, labels)``: (N, 3, 32, 32) uint8 and (N,) int64 in [0, 10).

    Raises:
        DataError: the file cannot be read, is not a pickle, asks for a global a CIFAR-10
            batch does not hold, or does not hold N rows of 3072 values in [0, 255] and N
            labels in [0, 10).
    """
    try:
        with open(path, "rb") as f:
            batch = CIFARUnpickler(f, path).load()
    except DataError:
        raise
    except OSError as error:
        raise DataError(
            f"{path} cannot be read ({error.strerror or error}). Make it readable, or delete it and run again with data.download=true."
        ) from error
    except Exception as error:  # no code runs while unpickling: any failure means a malformed file
        raise DataError(
            f"{path} is not a CIFAR-10 batch: it is not a readable pickle ({type(error).__name__}: {' '.join(str(error).split())}). {_FIX}"
        ) from error
    if not (isinstance(batch, dict) and b"data" in batch and b"labels" in batch):
        raise DataError(
            f"{path} is not a CIFAR-10 batch: it holds a {type(batch).__name__}, not a dict with b'data' and b'labels'. {_FIX}"
        )
    data = _integer_array(batch[b"data"], path, "b'data'", np.uint8)
    labels = _integer_array(batch[b"labels"], path, "b'labels'", np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise DataError(
            f"{path} is not a CIFAR-10 batch: expected data (N, 3072) and labels (N,), got {data.shape} and {labels.shape}. {_FIX}"
        )
    if len(labels) and not (labels.min() >= 0 and labels.max() < len(CLASSES)):
        raise DataError(
            f"{path} is not a CIFAR-10 batch: labels must be in [0, {len(CLASSES)}), got [{labels.min()}, {labels.max()}]. {_FIX}"
        )
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
    source = SOURCE
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
        self.root = data_folder(root, holds=f"{self.folder}/")
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
        # torchvision unpickles the batches with a plain pickle.load, but only after checking
        # each file's MD5 against the official one's, so no crafted file reaches it.
        problem = try_download(
            lambda: torchvision.datasets.CIFAR10(str(self.root), train=True, download=True), self.download, self.root
        )
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
