"""In-memory data: real file formats, splits, dtypes, batching and the error messages."""

from pathlib import Path

import pytest
import torch

from vae_zoo.data import DataNotFoundError, IndexBatchSampler, MNISTDataModule, SpritesDataModule
from vae_zoo.data.mnist import read_idx
from vae_zoo.errors import DataError


def first_batch(dm, loader):
    batch = next(iter(loader))
    return dm.on_after_batch_transfer(batch, 0)


def test_mnist_reads_idx_files_and_splits(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), download=False, val_size=50, batch_size=16, eval_batch_size=40)
    dm.setup()
    assert {k: len(v["image"]) for k, v in dm.splits.items()} == {"train": 250, "val": 50, "test": 100}
    for split in dm.splits.values():
        assert split["image"].dtype == torch.uint8 and split["image"].shape[1:] == (1, 28, 28)
        assert split["label"].dtype == torch.int64 and int(split["label"].max()) <= 9
    # the labels belong to the images: class k has its bright bar at rows 2k+4..2k+6
    images, labels = dm.splits["test"]["image"], dm.splits["test"]["label"]
    bar_rows = images[:, 0, :, 4:24].float().mean(-1).argmax(-1)
    assert torch.equal(bar_rows, 2 * labels + 4)
    # val is carved from train with a fixed seed: disjoint, and the same every time
    dm2 = MNISTDataModule(root=str(mnist_root), download=False, val_size=50)
    dm2.setup()
    assert torch.equal(dm.splits["val"]["image"], dm2.splits["val"]["image"])
    train_rows = {bytes(x.numpy()) for x in dm.splits["train"]["image"]}
    assert not any(bytes(x.numpy()) in train_rows for x in dm.splits["val"]["image"])
    batch = first_batch(dm, dm.train_dataloader())
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (16, 1, 28, 28)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].shape == (16,)


def test_read_idx_accepts_extracted_files_and_rejects_garbage(mnist_root, tmp_path):
    import gzip
    gz = mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    assert torch.equal(read_idx(plain), read_idx(gz))
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        read_idx(bad)


def test_missing_mnist_files_error_names_files_and_folder(tmp_path):
    dm = MNISTDataModule(root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert str((tmp_path / "nowhere" / "MNIST" / "raw").resolve()) in message
    assert "data.root" in message and "yann.lecun.com" in message


def test_binarization_modes(mnist_root):
    static = MNISTDataModule(root=str(mnist_root), download=False, val_size=50, binarize="static")
    static.setup()
    assert set(static.splits["train"]["image"].unique().tolist()) <= {0, 255}

    dynamic = MNISTDataModule(root=str(mnist_root), download=False, val_size=50, binarize="dynamic", batch_size=300)
    dynamic.setup()
    # train stays grey in memory and is sampled per batch; val/test are binarized once, fixed
    assert len(dynamic.splits["train"]["image"].unique()) > 2
    assert set(dynamic.splits["val"]["image"].unique().tolist()) <= {0, 255}

    class Training:  # stands in for the trainer state the hook reads
        training = True

    dynamic.trainer = Training()
    raw = {"image": dynamic.splits["train"]["image"][:64]}
    a = dynamic.on_after_batch_transfer(raw, 0)["image"]
    b = dynamic.on_after_batch_transfer(raw, 0)["image"]
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a, b)  # a fresh sample each time
    # E[bernoulli(p)] = p: the sample mean tracks the grey values
    grey = raw["image"].float() / 255
    means = torch.stack([dynamic.on_after_batch_transfer(raw, 0)["image"] for _ in range(200)]).mean(0)
    assert (means - grey).abs().max() < 0.15


def test_index_batch_sampler_covers_each_index_once():
    torch.manual_seed(0)
    sampler = IndexBatchSampler(103, 10, shuffle=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 11
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(103))
    assert not torch.equal(torch.cat(batches), torch.arange(103))
    assert len(list(IndexBatchSampler(103, 10, shuffle=False, drop_last=True))) == 10


def test_batches_are_one_index_operation(mnist_root):
    """No per-item __getitem__: the dataset is called once per batch with an index tensor."""
    dm = MNISTDataModule(root=str(mnist_root), download=False, val_size=50, batch_size=32)
    loader = dm.train_dataloader()
    calls = []
    dataset = loader.dataset
    original = type(dataset).__getitem__
    type(dataset).__getitem__ = lambda self, idx: calls.append(idx) or original(self, idx)
    try:
        n_batches = sum(1 for _ in loader)
    finally:
        type(dataset).__getitem__ = original
    assert len(calls) == n_batches == 8 and all(isinstance(c, torch.Tensor) for c in calls)


def test_resize_once_at_load(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), download=False, val_size=50, image_size=32)
    dm.setup()
    assert dm.splits["train"]["image"].shape[1:] == (1, 32, 32) and dm.image_shape == (1, 32, 32)


def test_sprites_datamodule_splits_factors_and_labels():
    dm = SpritesDataModule(num_train=100, num_val=20, num_test=30, image_size=32, batch_size=25, seed=3)
    dm.setup()
    assert {k: len(v["image"]) for k, v in dm.splits.items()} == {"train": 100, "val": 20, "test": 30}
    train = dm.splits["train"]
    assert train["image"].shape == (100, 1, 32, 32) and train["factors"].shape == (100, 5)
    assert torch.equal(train["label"], train["factors"][:, 0])
    batch = first_batch(dm, dm.train_dataloader())
    assert set(batch["image"].unique().tolist()) <= {0.0, 1.0} and batch["factors"].shape == (25, 5)
    again = SpritesDataModule(num_train=100, num_val=20, num_test=30, image_size=32, seed=3)
    again.setup()
    assert torch.equal(again.splits["test"]["image"], dm.splits["test"]["image"])
    with pytest.raises(ValueError, match="data.channels=1"):
        SpritesDataModule(channels=3)
