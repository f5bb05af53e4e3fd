"""CelebA (Liu et al. 2015): 202,599 aligned celebrity faces with 40 binary attributes.

Two layouts of ``<root>/celeba/`` are read as they are:

* torchvision's (and the official Google Drive files): ``img_align_celeba/*.jpg``,
  ``list_eval_partition.txt`` and ``list_attr_celeba.txt``;
* the Kaggle copy (https://www.kaggle.com/datasets/jessicali9530/celeba-dataset) unzipped
  there: ``img_align_celeba/img_align_celeba/*.jpg``, ``list_eval_partition.csv`` and
  ``list_attr_celeba.csv``.

``torchvision.datasets.CelebA`` is used only to download: it insists on the MD5 of every text
file (so a manual download of another revision, or the Kaggle CSVs, is refused) and decodes a
JPEG per item. Here the two tables are parsed directly and the images are decoded once, centre
cropped (148 x 148 of the 178 x 218 images by default, the usual VAE preprocessing since
Larsen et al. 2016) and resized into a memory-mapped cache (:mod:`vae_zoo.data.image_cache`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

from vae_zoo.data.base import data_folder, try_download
from vae_zoo.data.cached import CachedImagesDataModule, ImageList
from vae_zoo.errors import ConfigError, DataError, DataNotFoundError
from vae_zoo.support.extras import require

NUM_ATTRIBUTES = 40
PARTITION_TABLE, ATTRIBUTE_TABLE = "list_eval_partition", "list_attr_celeba"
# torchvision's layout first, then the Kaggle zip's nested folder.
IMAGE_FOLDERS = (Path("img_align_celeba"), Path("img_align_celeba", "img_align_celeba"))
SPLITS = ("train", "val", "test")  # partition ids 0, 1, 2 of list_eval_partition


def read_celeba_table(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read one of CelebA's tables, in the official text format or as Kaggle's CSV.

    Text: ``list_eval_partition.txt`` has lines ``<image> <partition>``;
    ``list_attr_celeba.txt`` starts with the number of images and a line of the 40 attribute
    names, then lines ``<image> <40 values of -1 or 1>`` (columns separated by spaces). CSV:
    a header ``image_id,<column names>`` and then the same rows.

    Returns:
        ``(image names, column names, values)``: values are an (N, K) int64 array; column
        names are empty for the partition table in text form (it has no header).

    Raises:
        DataError: a row with the wrong number of columns, or a value that is not an integer.
    """
    lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a spreadsheet's BOM
    if path.suffix == ".csv":
        rows = list(csv.reader(line for line in lines if line.strip()))
        header, body, first_line = rows[0][1:], rows[1:], 2
    else:
        rows = [line.split() for line in lines if line.strip()]
        if rows and len(rows[0]) == 1:  # the attribute table: a count, then the column names
            header, body, first_line = rows[1], rows[2:], 3
        else:
            header, body, first_line = [], rows, 1
    width = len(header) + 1 if header else len(body[0]) if body else 1
    for number, row in enumerate(body, first_line):
        if len(row) != width:
            raise DataError(f"{path}, line {number}: expected {width} columns, got {len(row)}.")
    try:
        values = np.array([row[1:] for row in body], dtype=np.int64).reshape(len(body), width - 1)
    except ValueError as error:
        raise DataError(f"{path}: a value is not an integer ({error}).") from error
    return [row[0] for row in body], header, values


class CelebADataModule(CachedImagesDataModule):
    """CelebA at ``image_size`` (64 by default) with the official train/val/test partition
    (162,770 / 19,867 / 19,962 images) and the 40 attributes.

    Batches carry ``attributes``: (B, 40) uint8 in {0, 1} (1 where the attribute's value is
    1 in ``list_attr_celeba``), in the file's column order (:attr:`attribute_names`). A
    conditional model reads them with ``model.label_key=attributes model.encoding=multi_hot``.

    Args:
        root: the folder that holds ``celeba/``.
        download: fetch the files through torchvision when they are missing (Google Drive;
            often over quota, hence the manual instructions in the error).
        image_size: side of the served images.
        crop: side of the centred square cut from the 178 x 218 images before resizing.
        num_classes: the number of attributes, 40 (a conditional model's condition size).
        **kwargs: see :class:`~vae_zoo.data.cached.CachedImagesDataModule`.
    """

    folder = "celeba"
    cache_name = "celeba"
    condition_key = "attributes"
    condition_encoding = "multi_hot"
    source = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
    kaggle = "https://www.kaggle.com/datasets/jessicali9530/celeba-dataset"

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        image_size: int = 64,
        channels: int = 3,
        crop: int | None = 148,
        num_classes: int = NUM_ATTRIBUTES,
        **kwargs,
    ):
        if num_classes != NUM_ATTRIBUTES:
            raise ConfigError(
                f"CelebA has {NUM_ATTRIBUTES} attributes; got data.num_classes={num_classes}. Set it to 40."
            )
        super().__init__(
            root=root, crop=crop, image_size=image_size, channels=channels, num_classes=num_classes, **kwargs
        )
        data_folder(self.root, holds=f"{self.folder}/")
        self.download = download
        self.attribute_names: list[str] | None = None
        self._partition: Tensor | None = None

    @property
    def base_folder(self) -> Path:
        return self.root / self.folder

    def _locate(self) -> dict[str, Path | None]:
        """The partition table, the attribute table and the image folder, where found."""

        def table(stem: str) -> Path | None:
            return next(
                (p for p in (self.base_folder / f"{stem}.{ext}" for ext in ("txt", "csv")) if p.is_file()), None
            )

        def holds_jpegs(folder: Path) -> bool:
            return (self.base_folder / folder).is_dir() and any((self.base_folder / folder).glob("*.jpg"))

        image_folder = next((folder for folder in IMAGE_FOLDERS if holds_jpegs(folder)), None)
        return {"partition": table(PARTITION_TABLE), "attributes": table(ATTRIBUTE_TABLE), "images": image_folder}

    def _missing(self, found: dict[str, Path | None]) -> list[str]:
        expected = {
            "partition": f"{PARTITION_TABLE}.txt (or .csv)",
            "attributes": f"{ATTRIBUTE_TABLE}.txt (or .csv)",
            "images": f"{IMAGE_FOLDERS[0]}/ with the aligned JPEGs",
        }
        return [expected[key] for key, path in found.items() if path is None]

    def locate_files(self) -> dict[str, Path]:
        """Find the files, downloading them if allowed; else fail with instructions."""
        found = self._locate()
        if not self._missing(found):
            return found
        if self.download:  # torchvision downloads CelebA from Google Drive with gdown
            require("celeba", "Downloading CelebA (data.download=true)")
        problem = try_download(
            lambda: torchvision.datasets.CelebA(str(self.root), split="all", target_type="attr", download=True),
            self.download,
            self.root,
        )
        found = self._locate()
        if missing := self._missing(found):
            raise DataNotFoundError(
                f"CelebA files not found in {self.base_folder.resolve()}: {', '.join(missing)}. {problem} "
                f"Get img_align_celeba.zip, {ATTRIBUTE_TABLE}.txt and {PARTITION_TABLE}.txt from "
                f"{self.source} (Google Drive: 'Align&Cropped Images', 'Anno', 'Eval') and unzip "
                f"them into that folder, or unzip the Kaggle copy ({self.kaggle}) there as it is; "
                "or point data.root at the folder that contains celeba/."
            )
        return found

    def list_images(self) -> ImageList:
        found = self.locate_files()
        names, _, partition = read_celeba_table(found["partition"])
        attr_names, columns, values = read_celeba_table(found["attributes"])
        if len(columns) != NUM_ATTRIBUTES:
            raise DataError(f"{found['attributes']} has {len(columns)} attribute columns; CelebA has {NUM_ATTRIBUTES}.")
        row_of = {name: row for row, name in enumerate(attr_names)}
        if missing := [name for name in names if name not in row_of]:
            raise DataError(f"{found['attributes']} has no attributes for {len(missing)} images, e.g. {missing[0]}.")
        self.attribute_names = columns
        partition = torch.from_numpy(partition[:, 0])
        if not set(partition.unique().tolist()) <= {0, 1, 2}:
            raise DataError(f"{found['partition']}: partitions must be 0 (train), 1 (val) or 2 (test).")
        # Cache rows: train, then val, then test (each in file order), so splits are blocks.
        order = torch.argsort(partition, stable=True)
        attributes = torch.from_numpy(values[[row_of[names[i]] for i in order]] == 1).to(torch.uint8)
        self._partition = partition[order]
        files = [found["images"] / names[i] for i in order]
        return ImageList(self.base_folder, files, {"attributes": attributes})

    def split_sizes(self, kept: Tensor) -> dict[str, int]:
        counts = torch.bincount(self._partition[kept], minlength=len(SPLITS)).tolist()
        if min(counts) == 0:
            raise DataError(
                f"CelebA in {self.base_folder} has no readable images in some split "
                f"({dict(zip(SPLITS, counts))}); check {PARTITION_TABLE} and the image folder."
            )
        return dict(zip(SPLITS, counts))
