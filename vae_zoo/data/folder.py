"""A folder of the user's own images, of any sizes, cached once at the configured size."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from vae_zoo.data.base import data_folder
from vae_zoo.data.cached import CachedImagesDataModule, ImageList
from vae_zoo.errors import ConfigError, DataNotFoundError


def find_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively, following links), relative to it and sorted.

    Images are recognised by torchvision's extensions (``IMG_EXTENSIONS``: .jpg, .jpeg, .png,
    .ppm, .bmp, .pgm, .tif, .tiff, .webp; any case). Hidden files and folders (including the
    cache folder) are left out, and so is anything that is not a regular file (a FIFO or a device
    named ``x.png`` would block or never end when read).
    """
    found = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        found += [
            Path(folder, n).relative_to(root)
            for n in names
            if not n.startswith(".")
            and has_file_allowed_extension(n, IMG_EXTENSIONS)
            and os.path.isfile(os.path.join(folder, n))  # a regular file (or a link to one)
        ]
    return sorted(found)


class ImageFolderDataModule(CachedImagesDataModule):
    """Every image under ``root``, resized and centre-cropped to ``image_size``.

    The images are decoded once into a cache (:mod:`vae_zoo.data.image_cache`); unreadable
    files are skipped and counted. Validation and test sets are drawn at random, with the
    fixed ``seed``, from the readable images: the cache stores the images in that shuffled
    order, so changing ``seed`` rebuilds the cache while changing the fractions does not.

    Labels: when every image sits in a first-level subfolder (torchvision's ImageFolder
    layout, ``root/<class>/<image>``), batches carry ``label``, the index of the subfolder
    in sorted order; otherwise there are no labels.

    Args:
        root: the folder of images.
        image_size: side of the served images.
        channels: 3 (RGB) or 1 (converted to grey).
        crop: side of the centred square cut from each image before resizing (source
            pixels); None: the largest centred square.
        val_fraction, test_fraction: shares of the readable images held out.
        num_classes: None to take the number of class subfolders found; a number is checked
            against it (a conditional model needs it set: ``data.num_classes``).
        **kwargs: see :class:`~vae_zoo.data.cached.CachedImagesDataModule`.
    """

    cache_name = "images"

    def __init__(
        self,
        root: str = "data/images",
        image_size: int = 64,
        channels: int = 3,
        crop: int | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        num_classes: int | None = None,
        **kwargs,
    ):
        if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
            raise ConfigError(
                "data.val_fraction and data.test_fraction must be > 0 and sum to less than 1, got "
                f"{val_fraction} and {test_fraction}."
            )
        super().__init__(
            root=root, crop=crop, image_size=image_size, channels=channels, num_classes=num_classes, **kwargs
        )
        data_folder(self.root, holds="the images (in class subfolders or not)")
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.classes: list[str] | None = None

    def list_images(self) -> ImageList:
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"Image folder {self.root.resolve()} does not exist. Point data.root at a folder of images "
                f"({', '.join(IMG_EXTENSIONS)}), in subfolders or not."
            )
        files = find_images(self.root)
        if not files:
            raise DataNotFoundError(
                f"No images found in {self.root.resolve()} or its subfolders (looked for "
                f"{', '.join(IMG_EXTENSIONS)}). Point data.root at a folder of images."
            )
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.seed))
        files = [files[i] for i in order]
        columns = {}
        if all(len(f.parts) == 2 for f in files):  # ImageFolder layout: root/<class>/<image>
            self.classes = sorted({f.parts[0] for f in files})
            index = {name: i for i, name in enumerate(self.classes)}
            columns["label"] = torch.tensor([index[f.parts[0]] for f in files], dtype=torch.int64)
            self._check_num_classes(len(self.classes))
        elif self.num_classes is not None:
            raise ConfigError(
                f"data.num_classes={self.num_classes}, but the images in {self.root} are not in class "
                "subfolders (root/<class>/<image>), so there are no labels. Set data.num_classes=null."
            )
        return ImageList(self.root, files, columns)

    def _check_num_classes(self, found: int) -> None:
        if self.num_classes is None:
            self.num_classes = found
        elif self.num_classes != found:
            raise ConfigError(
                f"data.num_classes={self.num_classes}, but {self.root} has {found} class subfolders "
                f"({', '.join(self.classes[:10])}{', ...' if found > 10 else ''}). Set data.num_classes={found}."
            )

    def split_sizes(self, kept: Tensor) -> dict[str, int]:
        total = len(kept)
        val, test = round(total * self.val_fraction), round(total * self.test_fraction)
        if min(val, test, total - val - test) < 1:
            raise ConfigError(
                f"{self.root} has {total} readable images: too few to hold out val_fraction="
                f"{self.val_fraction} and test_fraction={self.test_fraction} with at least one image each."
            )
        return {"val": val, "test": test, "train": total - val - test}
