"""Bad data files and bad data settings, as a user meets them: a crafted CIFAR-10 batch runs no
code, corrupt MNIST files and impossible settings give one-line errors that name the file or
the setting and say what to do."""

from __future__ import annotations

import gzip
import os
import pickle
import shlex

import numpy as np
import pytest
import torch

from vae_zoo.data import (
    CelebADataModule,
    CIFAR10DataModule,
    DSpritesDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from vae_zoo.data.cifar import read_cifar_batch
from vae_zoo.errors import ConfigError, DataError

from conftest import make_mnist_files, run_cli, run_folders
from data_fixtures import python2_cifar_pickle, write_celeba, write_cifar10, write_dsprites, write_image_folder


class RunsWhenUnpickled:
    """Unpickling this calls ``function(*args)``: the way a crafted pickle runs code."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


# Two ways a pickle can create a file, each with the global its pickle names.
CREATE_FILE = {
    f"{os.system.__module__}.system": lambda target: RunsWhenUnpickled(os.system, f"touch {shlex.quote(str(target))}"),
    f"{open.__module__}.open": lambda target: RunsWhenUnpickled(open, str(target), "w"),
}


@pytest.mark.parametrize("refused", CREATE_FILE)
def test_a_crafted_cifar_batch_runs_no_code(tmp_path, refused):
    folder = write_cifar10(tmp_path / "data", per_batch=4, num_test=4)
    target = tmp_path / "pwned"
    valid = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")  # our own fixture
    payload = pickle.dumps({**valid, b"batch_label": CREATE_FILE[refused](target)}, protocol=2)
    (folder / "data_batch_1").write_bytes(payload)

    dm = CIFAR10DataModule(root=str(tmp_path / "data"), download=False, val_size=4)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert not target.exists()  # nothing in the file ran
    assert message.startswith(f"{folder / 'data_batch_1'} is not a CIFAR-10 batch: its pickle refers to {refused},")
    assert "data.download=true" in message and "cs.toronto.edu" in message and "\n" not in message
    # the file really is harmful: a plain pickle.load (torchvision's reader) creates the file
    pickle.loads(payload, encoding="bytes")
    assert target.exists()


def test_cifar_batches_as_written_by_python_2_and_3_load(tmp_path):
    folder = write_cifar10(tmp_path, per_batch=6, num_test=5)
    trusted = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")  # our own fixture
    images, labels = read_cifar_batch(folder / "test_batch")  # Python 3, protocol 2, numpy 2 names
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 32, 32) and labels.dtype == torch.int64
    assert torch.equal(images.reshape(5, 3072), torch.from_numpy(trusted[b"data"]))
    assert labels.tolist() == trusted[b"labels"]
    # the real batches: Python 2 str keys and raw bytes, numpy 1's numpy.core.multiarray
    original = folder / "python2_batch"
    original.write_bytes(python2_cifar_pickle(trusted[b"data"], trusted[b"labels"]))
    images2, labels2 = read_cifar_batch(original)
    assert torch.equal(images2, images) and torch.equal(labels2, labels)


def test_cifar_batch_with_an_object_array_is_refused(tmp_path):
    folder = write_cifar10(tmp_path, per_batch=2, num_test=2)
    batch = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")
    batch[b"data"] = batch[b"data"].astype(object)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(
        DataError, match=r"test_batch is not a CIFAR-10 batch: b'data' holds object values, not integers\. Delete it"
    ):
        read_cifar_batch(folder / "test_batch")


def truncated(gz: bytes) -> bytes:
    return gz[: len(gz) // 2]


def gzip_of_fewer_values(gz: bytes) -> bytes:  # valid gzip, but the IDX data stops short
    return gzip.compress(gzip.decompress(gz)[:-100])


CORRUPTIONS = {
    "truncated gzip": (truncated, "is truncated: its gzip data ends early"),
    "random bytes": (lambda gz: np.random.default_rng(0).bytes(1000), "is not valid gzip data"),
    "empty file": (lambda gz: b"", "is not an IDX file: it holds 0 bytes"),
    "fewer values than the header": (
        gzip_of_fewer_values,
        "is truncated: its header gives shape (300, 28, 28), 235200 values, but it holds 235100",
    ),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_mnist_files_name_the_file_and_the_fix(tmp_path, corruption):
    corrupt, what = CORRUPTIONS[corruption]
    root = make_mnist_files(tmp_path / "data")
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(corrupt(path.read_bytes()))
    dm = MNISTDataModule(root=str(root), download=False, val_size=50)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert type(info.value) is DataError and "\n" not in message
    assert message.startswith(f"{path} {what}")
    assert message.endswith(
        f"Delete it and run again with data.download=true, or copy the file again from {MNISTDataModule.source}."
    )


def test_fashion_mnist_shares_the_reader_and_names_its_source(tmp_path):
    root = make_mnist_files(tmp_path, folder="FashionMNIST", n_train=60, n_test=20)
    raw = root / "FashionMNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08")  # extracted, shorter than a header
    with pytest.raises(DataError) as info:
        FashionMNISTDataModule(root=str(root), download=False, val_size=10).setup()
    message = str(info.value)
    assert message.startswith(f"{raw / 't10k-labels-idx1-ubyte'} is not an IDX file: it holds 3 bytes")
    assert "zalandoresearch/fashion-mnist" in message


def test_mnist_labels_that_do_not_match_the_images(tmp_path):
    root = make_mnist_files(tmp_path, n_train=60, n_test=20)
    labels = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    images = make_mnist_files(tmp_path / "other", n_train=60, n_test=21) / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(images.read_bytes())
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte.gz holds labels of shape \(21,\), but t10k-images-idx3-ubyte.gz holds 20 images",
    ):
        MNISTDataModule(root=str(root), download=False, val_size=10).setup()


@pytest.mark.parametrize(
    "setting, value",
    [("batch_size", 0), ("batch_size", -8), ("batch_size", 2.5), ("eval_batch_size", 0), ("eval_batch_size", -1)],
)
def test_batch_sizes_are_checked_at_construction(tmp_path, setting, value):
    with pytest.raises(ConfigError) as info:
        MNISTDataModule(root=str(tmp_path), download=False, **{setting: value})  # no files needed
    assert str(info.value).startswith(
        f"data.{setting} must be a whole number >= 1, got {value!r}. Set e.g. data.{setting}="
    )


def test_eval_batch_size_null_means_the_training_batch_size(tmp_path):
    assert MNISTDataModule(root=str(tmp_path), batch_size=16, eval_batch_size=None).eval_batch_size == 16


DATAMODULES = {
    "mnist": MNISTDataModule,
    "fashion_mnist": FashionMNISTDataModule,
    "cifar10": CIFAR10DataModule,
    "celeba": CelebADataModule,
    "folder": ImageFolderDataModule,
    "dsprites": DSpritesDataModule,
}


@pytest.mark.parametrize("name", DATAMODULES)
def test_a_root_that_is_a_file_is_a_config_error(tmp_path, name):
    a_file = tmp_path / "data.tar.gz"
    a_file.write_bytes(b"not a folder")
    with pytest.raises(ConfigError) as info:
        DATAMODULES[name](root=str(a_file))
    assert str(info.value).startswith(
        f"data.root={a_file} is a file, not a folder. Point data.root at the folder that holds"
    )
    with pytest.raises(ConfigError, match=f"data.root={a_file / 'sub'} is inside {a_file}, which is a file"):
        DATAMODULES[name](root=str(a_file / "sub"))


def test_roots_that_are_folders_or_do_not_exist_yet_are_fine(tmp_path):
    write_cifar10(tmp_path / "cifar")
    write_dsprites(tmp_path / "dsprites", n=10)
    write_celeba(tmp_path / "celeba", partition_sizes=(1, 1, 1))
    write_image_folder(tmp_path / "images", per_class=1)
    for root, cls in [
        ("cifar", CIFAR10DataModule),
        ("dsprites", DSpritesDataModule),
        ("celeba", CelebADataModule),
        ("images", ImageFolderDataModule),
        ("not/yet/there", MNISTDataModule),
    ]:
        assert cls(root=str(tmp_path / root)).root == tmp_path / root


def test_cli_corrupt_mnist_file_is_one_line_without_traceback(tmp_path):
    root = make_mnist_files(tmp_path / "data", n_train=120, n_test=40)
    path = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(truncated(path.read_bytes()))
    result = run_cli(
        ["data=mnist", f"data.root={root}", "data.download=false", "data.val_size=20", "trainer.accelerator=cpu"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line == (
        f"error: {path} is truncated: its gzip data ends early. Delete it and run again with "
        f"data.download=true, or copy the file again from {MNISTDataModule.source}."
    )
    assert "Traceback" not in result.stderr
    [run] = run_folders(tmp_path / "logs")
    assert not (run / "checkpoints").exists()


def test_cli_batch_size_zero_fails_before_anything_runs(tmp_path):
    result = run_cli(["data.batch_size=0"], cwd=tmp_path)
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line == "error: data.batch_size must be a whole number >= 1, got 0. Set e.g. data.batch_size=128."
    assert "Traceback" not in result.stderr
