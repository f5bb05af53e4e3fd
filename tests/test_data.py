"""In-memory data: real file formats, splits, dtypes, batching and the error messages."""

import pytest
import torch

from vae_zoo.data import DataNotFoundError, IndexBatchSampler, MNISTDataModule, SpritesDataModule
from vae_zoo.data.corruption import GaussianNoise, PixelMask
from vae_zoo.data.mnist import read_idx
from vae_zoo.errors import ConfigError, DataError


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


def test_shuffles_differ_between_epochs_and_repeat_with_the_seed(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    sampler = IndexBatchSampler(50, 50, shuffle=True, seed=7)
    first, second = next(iter(sampler)), next(iter(sampler))  # each iter() is a new epoch
    assert not torch.equal(first, second)
    again = IndexBatchSampler(50, 50, shuffle=True, seed=7)
    again.set_epoch(1)  # what Lightning does before each epoch, e.g. after resuming
    assert torch.equal(next(iter(again)), second)
    # without an explicit seed, the run's seed (seed_everything sets PL_GLOBAL_SEED) decides
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    assert torch.equal(next(iter(IndexBatchSampler(50, 50, shuffle=True))), first)
    monkeypatch.setenv("PL_GLOBAL_SEED", "8")
    assert not torch.equal(next(iter(IndexBatchSampler(50, 50, shuffle=True))), first)


@pytest.mark.parametrize("num_items,batch_size", [(103, 10), (7, 4), (2, 5)])
def test_rank_shards_train_disjoint_equal_and_eval_exact(monkeypatch, num_items, batch_size):
    """Three ranks, as torch.distributed would report them: training shards are disjoint, of
    equal size and batch count; evaluation shards partition the items exactly."""
    import vae_zoo.data.sampler as sampler_module

    world_size = 3
    seen = {"train": [], "eval": []}
    for rank in range(world_size):
        monkeypatch.setattr(sampler_module, "distributed_rank_and_size", lambda rank=rank: (rank, world_size))
        for kind, shuffle in (("train", True), ("eval", False)):
            sampler = IndexBatchSampler(num_items, batch_size, shuffle=shuffle, seed=1)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            seen[kind].append(torch.cat(batches) if batches else torch.empty(0, dtype=torch.long))
    train = torch.cat(seen["train"])
    assert len(train.unique()) == len(train) == world_size * (num_items // world_size)
    assert len({len(s) for s in seen["train"]}) == 1
    assert torch.equal(torch.cat(seen["eval"]), torch.arange(num_items))


def test_denoising_corruption_keeps_the_clean_target(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), download=False, val_size=50, batch_size=300, corruption=PixelMask(0.5))
    dm.setup()

    class Stage:  # stands in for the trainer state the hook reads
        training = True

    dm.trainer = Stage()
    raw = dm.splits["train"]
    clean = raw["image"].float() / 255
    batch = dm.on_after_batch_transfer({"image": raw["image"]}, 0)
    assert torch.equal(batch["target"], clean)
    masked = (batch["image"] == 0) & (clean > 0)
    assert 0.4 < masked.sum() / (clean > 0).sum() < 0.6  # about half the lit pixels are masked
    assert torch.equal(batch["image"][~masked], clean[~masked])  # the rest is untouched
    again = dm.on_after_batch_transfer({"image": raw["image"]}, 0)["image"]
    assert not torch.equal(again, batch["image"])  # training: a fresh corruption every batch

    # validation: corrupted once at setup with the data seed, the same every epoch and run
    dm.trainer = None
    val = first_batch(dm, dm.val_dataloader())
    assert torch.equal(val["target"], dm.splits["val"]["image"][: len(val["image"])].float() / 255)
    twin = MNISTDataModule(root=str(mnist_root), download=False, val_size=50, corruption=PixelMask(0.5))
    twin.setup()
    assert torch.equal(first_batch(twin, twin.val_dataloader())["image"], val["image"])
    assert not torch.equal(val["image"], val["target"])


def test_gaussian_corruption_and_config_errors(mnist_root):
    from vae_zoo.errors import ConfigError

    dm = MNISTDataModule(root=str(mnist_root), download=False, val_size=50, corruption=GaussianNoise(0.2))
    images = torch.full((64, 1, 28, 28), 128, dtype=torch.uint8)
    batch = dm.on_after_batch_transfer({"image": images}, 0)
    noise = batch["image"] - batch["target"]
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert abs(noise.std().item() - 0.2) < 0.01 and abs(noise.mean().item()) < 0.01
    with pytest.raises(
        ConfigError, match="corruption=gaussian data.corruption.std"
    ):  # the old mapping form says what to write
        MNISTDataModule(corruption={"kind": "gaussian", "std": 0.1})
    with pytest.raises(ConfigError, match="std must be > 0"):
        GaussianNoise(0.0)
    with pytest.raises(ConfigError, match="fraction must be in"):
        PixelMask(1.5)


def test_corruption_is_chosen_by_config_group():
    """corruption=gaussian / mask build the object from its _target_, settings under data.corruption."""
    from hydra.utils import instantiate

    from vae_zoo.run.config import compose_config

    cfg = compose_config(
        ["corruption=mask", "data.corruption.fraction=0.4", "data.num_train=8", "data.num_val=4", "data.num_test=4"]
    )
    dm = instantiate(cfg.data)
    assert isinstance(dm.corruption, PixelMask) and dm.corruption.fraction == 0.4
    assert compose_config([]).data.corruption is None


def test_train_classes_keep_train_and_val_to_those_labels_and_leave_test_as_it_was(mnist_root):
    settings = dict(root=str(mnist_root), download=False, val_size=50, binarize="dynamic")
    full, normal = MNISTDataModule(**settings), MNISTDataModule(**settings, train_classes=[0, 1, 2, 3, 4, 5, 6, 8])
    full.setup(), normal.setup()
    for name in ("train", "val"):
        kept = torch.isin(full.splits[name]["label"], torch.tensor([0, 1, 2, 3, 4, 5, 6, 8]))
        assert 0 < kept.sum() < len(kept)
        for key in ("image", "label"):  # the same examples, in the same order, as the unfiltered split
            assert torch.equal(normal.splits[name][key], full.splits[name][key][kept])
    # test: every class, binarized exactly as without the filter (its numbers stay comparable)
    assert torch.equal(normal.splits["test"]["image"], full.splits["test"]["image"])
    assert set(normal.splits["test"]["label"].tolist()) == set(range(10))
    with pytest.raises(ConfigError, match=r"does not have: \[11\]"):
        MNISTDataModule(**settings, train_classes=[0, 11]).setup()
    with pytest.raises(ConfigError, match="is empty"):
        MNISTDataModule(**settings, train_classes=[])
