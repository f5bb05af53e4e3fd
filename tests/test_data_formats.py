"""Each real data set read from small fixtures in its real file format: shapes, dtypes, value
ranges, labels, splits, and what the user is told when files are missing or wrong."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra.utils import instantiate

from vae_zoo.data import (
    CelebADataModule,
    CIFAR10DataModule,
    DSpritesDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
)
from vae_zoo.data.sprites import render_sprites
from vae_zoo.errors import ConfigError, DataError, DataNotFoundError
from vae_zoo.models.data_fit import check_compatible
from vae_zoo.run.config import compose_config

from conftest import make_mnist_files
from data_fixtures import CELEBA_ATTRIBUTES, write_celeba, write_cifar10, write_dsprites, write_image_folder


def served_batch(dm, loader):
    return dm.on_after_batch_transfer(next(iter(loader)), 0)


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    root = make_mnist_files(tmp_path, folder="FashionMNIST", n_train=120, n_test=40)
    dm = FashionMNISTDataModule(root=str(root), download=False, val_size=20)
    dm.setup()
    assert {k: len(v["image"]) for k, v in dm.splits.items()} == {"train": 100, "val": 20, "test": 40}
    assert dm.splits["test"]["image"].shape[1:] == (1, 28, 28)
    with pytest.raises(DataNotFoundError, match=r"FashionMNIST/raw.*zalandoresearch/fashion-mnist"):
        FashionMNISTDataModule(root=str(tmp_path / "empty"), download=False).prepare_data()


def test_cifar10_reads_pickle_batches(tmp_path):
    write_cifar10(tmp_path, per_batch=12, num_test=20)
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=10, batch_size=8)
    dm.setup()
    assert {k: len(v["image"]) for k, v in dm.splits.items()} == {"train": 50, "val": 10, "test": 20}
    for split in dm.splits.values():
        images, labels = split["image"], split["label"]
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32) and labels.dtype == torch.int64
        # planes are red, green, blue in that order, and each label belongs to its image
        assert torch.equal(images[:, 0], (20 * labels).to(torch.uint8)[:, None, None].expand(-1, 32, 32))
        assert (images[:, 2] == 200).all() and len(images[:, 1].unique()) > 100
    batch = served_batch(dm, dm.train_dataloader())
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1 and batch["label"].shape == (8,)


def test_cifar10_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        CIFAR10DataModule(root=str(tmp_path), download=False).prepare_data()
    message = str(info.value)
    assert "data_batch_1" in message and "test_batch" in message and "cs.toronto.edu" in message
    assert str((tmp_path / "cifar-10-batches-py").resolve()) in message and "data.root" in message
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR-10 batch"):
        CIFAR10DataModule(root=str(tmp_path), download=False, val_size=10).setup()


def test_dsprites_reads_the_npz_with_its_factors(tmp_path, caplog):
    _, written = write_dsprites(tmp_path, n=240)
    dm = DSpritesDataModule(root=str(tmp_path), download=False, num_val=30, num_test=20, batch_size=16)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert "procedural" not in caplog.text  # the file was used
    assert {k: len(v["image"]) for k, v in dm.splits.items()} == {"val": 30, "test": 20, "train": 190}
    factors = torch.cat([s["factors"] for s in dm.splits.values()])
    assert torch.equal(factors.unique(dim=0), written.unique(dim=0))  # a partition of the file's rows
    for split in dm.splits.values():
        assert split["image"].shape[1:] == (1, 64, 64) and set(split["image"].unique().tolist()) <= {0, 255}
        assert torch.equal(split["image"], render_sprites(split["factors"]))  # images match their factors
        assert torch.equal(split["label"], split["factors"][:, 0])
    batch = served_batch(dm, dm.train_dataloader())
    assert set(batch["image"].unique().tolist()) <= {0.0, 1.0} and batch["factors"].shape == (16, 5)


def test_dsprites_without_the_file_renders_or_fails_on_request(tmp_path, caplog):
    dm = DSpritesDataModule(root=str(tmp_path), download=False, num_train=40, num_val=10, num_test=10, image_size=32)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz not found" in caplog.text
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().count("\n") == 0
    train = dm.splits["train"]
    assert train["image"].shape == (40, 1, 32, 32) and torch.equal(train["image"], render_sprites(train["factors"], 32))
    strict = DSpritesDataModule(root=str(tmp_path), download=False, require_file=True)
    with pytest.raises(DataNotFoundError) as info:
        strict.prepare_data()
    message = str(info.value)
    assert "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz" in message
    assert str((tmp_path / "dsprites").resolve()) in message and "github.com/deepmind/dsprites-dataset" in message


@pytest.mark.parametrize("layout", ["torchvision", "kaggle"])
def test_celeba_layouts_partition_attributes_and_crop(tmp_path, layout):
    base, truth = write_celeba(tmp_path, layout, partition_sizes=(10, 4, 5))
    dm = CelebADataModule(root=str(tmp_path), download=False, batch_size=4, decode_workers=2)
    dm.setup()
    assert dm.attribute_names == CELEBA_ATTRIBUTES
    assert {k: len(v["image"]) for k, v in dm.splits.items()} == {"train": 10, "val": 4, "test": 5}
    for part, split in enumerate(dm.splits.values()):
        images, attributes = split["image"], split["attributes"]
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 64, 64)
        assert attributes.dtype == torch.uint8 and attributes.shape[1:] == (40,)
        # each split holds the images of its partition, with their attribute rows
        expected = sorted((row for name, row in truth["attributes"].items() if truth["partition"][name] == part))
        assert sorted((2 * attributes.long() - 1).tolist()) == expected
        # the first attribute set the face's grey level; the 148 crop leaves the red border out
        grey = images.float().mean(dim=(2, 3))
        assert torch.equal(grey[:, 1] > 130, attributes[:, 0] == 1)
        assert (grey[:, 0] - grey[:, 1]).abs().max() < 10
    assert list((base / ".vae_zoo_cache").glob("celeba-64px-rgb-crop148-*.u8"))
    batch = served_batch(dm, dm.train_dataloader())
    assert batch["image"].shape == (4, 3, 64, 64) and batch["attributes"].shape == (4, 40)
    uncropped = CelebADataModule(root=str(tmp_path), download=False, crop=None, image_size=32)
    uncropped.setup()
    reds = uncropped.splits["train"]["image"].float().mean(dim=(2, 3))
    assert (reds[:, 0] - reds[:, 1] > 20).all()  # without the crop, the border shows


def test_celeba_missing_files_say_what_and_where(tmp_path):
    (tmp_path / "celeba").mkdir()
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(DataNotFoundError) as info:
        CelebADataModule(root=str(tmp_path), download=False).prepare_data()
    message = str(info.value)
    assert "list_attr_celeba.txt (or .csv)" in message and "img_align_celeba/" in message
    assert "list_eval_partition" not in message.split("Download is off")[0]  # found, so not listed
    assert str((tmp_path / "celeba").resolve()) in message
    assert "mmlab.ie.cuhk.edu.hk" in message and "kaggle.com" in message and "data.root" in message


def test_celeba_table_with_a_bad_row_is_reported(tmp_path):
    base, _ = write_celeba(tmp_path, "torchvision", partition_sizes=(3, 1, 1))
    table = base / "list_attr_celeba.txt"
    lines = table.read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 2)[0]  # drop the last values of the second image
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"list_attr_celeba.txt, line 4: expected 41 columns"):
        CelebADataModule(root=str(tmp_path), download=False).prepare_data()


def test_image_folder_skips_broken_files_and_reads_classes(tmp_path, caplog):
    truth = write_image_folder(tmp_path / "photos", per_class=8)
    dm = ImageFolderDataModule(root=str(tmp_path / "photos"), image_size=16, val_fraction=0.2, test_fraction=0.2)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert f"Skipped 2 of {truth['readable'] + 2} images" in caplog.text
    assert all(path in caplog.text for path in truth["unreadable"])
    assert dm.classes == truth["classes"] and dm.num_classes == 2
    sizes = {k: len(v["image"]) for k, v in dm.splits.items()}
    assert sizes == {"val": 3, "test": 3, "train": 10}
    for split in dm.splits.values():
        assert split["image"].shape[1:] == (3, 16, 16) and split["image"].dtype == torch.uint8
        # dark images are 40, light ones 220 (JPEG/PNG round trip aside), as their labels say
        level = split["image"].float().mean(dim=(1, 2, 3))
        assert (
            torch.equal(level > 130, split["label"] == 1)
            and ((level - 40).abs().lt(3) | (level - 220).abs().lt(3)).all()
        )
    grey = ImageFolderDataModule(
        root=str(tmp_path / "photos"), image_size=16, channels=1, val_fraction=0.2, test_fraction=0.2
    )
    grey.setup()
    assert grey.splits["train"]["image"].shape[1:] == (1, 16, 16)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        ImageFolderDataModule(root=str(tmp_path / "nope")).prepare_data()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataNotFoundError, match=r"No images found in .*empty.*\.jpg"):
        ImageFolderDataModule(root=str(tmp_path / "empty")).prepare_data()
    write_image_folder(tmp_path / "photos", per_class=2)
    with pytest.raises(ConfigError, match="has 2 class subfolders.*data.num_classes=2"):
        ImageFolderDataModule(root=str(tmp_path / "photos"), num_classes=5).prepare_data()


def test_model_and_data_mismatches_are_reported_before_training(tmp_path, mnist_root):
    data_dir = [f"paths.data_dir={mnist_root}", "data.download=false"]
    cfg = compose_config(["data=mnist", *data_dir, "model.image_channels=3"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"serves 1x28x28 images .* built for 3x28x28"):
        check_compatible(instantiate(cfg.data), instantiate(cfg.model))
    celeba = ["data=celeba", "model=cvae"]  # the condition's kind is known without the files
    cfg = compose_config(celeba, output_dir=tmp_path)
    with pytest.raises(ConfigError, match="model.label_key=attributes model.encoding=multi_hot"):
        check_compatible(instantiate(cfg.data), instantiate(cfg.model))
    cfg = compose_config([*celeba, "model.label_key=attributes", "model.encoding=multi_hot"], output_dir=tmp_path)
    check_compatible(instantiate(cfg.data), instantiate(cfg.model))


def test_a_failed_download_leaves_no_empty_folders(tmp_path):
    """torchvision makes <root>/celeba (or MNIST/raw) before it fetches anything; when the fetch
    fails, those folders, and a root that was not there, are removed again. Folders that hold a
    file (a partial download, the user's own files) stay."""
    from vae_zoo.data.base import try_download

    def offline(*folders):
        def download():
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
            raise ConnectionError("Name or service not known")

        return download

    root = tmp_path / "data"
    problem = try_download(offline(root / "celeba", root / "MNIST" / "raw"), True, root)
    assert problem.startswith("Download failed (ConnectionError") and not root.exists()
    (root / "mine").mkdir(parents=True)
    (root / "mine" / "keep.txt").write_text("x")
    try_download(offline(root / "MNIST" / "raw", root / "partial"), True, root)
    assert sorted(p.name for p in root.iterdir()) == ["mine"]
    (root / "partial").mkdir()
    (root / "partial" / "file.tar.gz.part").write_bytes(b"x")
    try_download(offline(root / "celeba"), True, root)
    assert sorted(p.name for p in root.iterdir()) == ["mine", "partial"]
    assert (
        try_download(offline(root / "x"), False, root) == "Download is off (data.download=false)."
        and not (root / "x").exists()
    )
