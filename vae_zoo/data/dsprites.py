"""dSprites (Matthey et al. 2017): DeepMind's file when present, the procedural generator else.

The real data set is every combination of five factors (3 shapes x 6 scales x 40
orientations x 32 x-positions x 32 y-positions = 737,280 binary 64x64 images), stored in
``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` with the arrays ``imgs`` (N, 64, 64) uint8
in {0, 1}, ``latents_classes`` and ``latents_values`` (N, 6): colour (one value only), shape,
scale, orientation, posX, posY. When the file is absent, :mod:`vae_zoo.data.sprites` renders
the same factor grid, so splits, factors and labels mean the same either way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets.utils import download_url

from vae_zoo.data.base import InMemoryDataModule, Split, data_folder, split_at_random, try_download
from vae_zoo.data.sprites import FACTOR_NAMES, FACTOR_SIZES, SHAPES, render_sprites
from vae_zoo.errors import DataError, DataNotFoundError

log = logging.getLogger(__name__)

FILE_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
SOURCE = "https://github.com/deepmind/dsprites-dataset"
URL = f"{SOURCE}/raw/master/{FILE_NAME}"


def factor_grid() -> Tensor:
    """Every factor combination, (737280, 5) int64 class indices in the order of
    :data:`~vae_zoo.data.sprites.FACTOR_NAMES`, the last factor varying fastest (the row
    order of the dSprites file)."""
    return torch.cartesian_prod(*(torch.arange(size) for size in FACTOR_SIZES))


def read_dsprites(path: Path) -> tuple[Tensor, Tensor]:
    """Read the images and factor classes of a dSprites ``.npz``.

    Only the two plain arrays are read (no ``allow_pickle``: the file's pickled ``metadata``
    is not needed, and unpickling would run code from the file).

    Returns:
        ``(images, factors)``: (N, 1, 64, 64) uint8 in {0, 255} and (N, 5) int64 classes in
        the order of :data:`~vae_zoo.data.sprites.FACTOR_NAMES` (the constant colour dropped).

    Raises:
        DataError: the file is not a readable ``.npz`` with those arrays, shapes and values.
    """
    try:
        with np.load(path) as npz:
            images, classes = npz["imgs"], npz["latents_classes"]
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path} is not a dSprites .npz with 'imgs' and 'latents_classes': {error}") from error
    if images.ndim != 3 or images.dtype != np.uint8 or classes.shape != (len(images), 1 + len(FACTOR_NAMES)):
        raise DataError(
            f"{path}: expected imgs (N, H, W) uint8 and latents_classes (N, 6), got {images.shape} "
            f"{images.dtype} and {classes.shape}."
        )
    factors = torch.from_numpy(classes[:, 1:].astype(np.int64))
    if len(factors) and ((factors < 0).any() or (factors >= torch.tensor(FACTOR_SIZES)).any()):
        raise DataError(f"{path}: latents_classes outside the dSprites grid {dict(zip(FACTOR_NAMES, FACTOR_SIZES))}.")
    if images.max(initial=0) > 1:
        raise DataError(f"{path}: imgs must hold 0 and 1 only (binary sprites), found {images.max()}.")
    return torch.from_numpy(images).unsqueeze(1).mul_(255), factors


class DSpritesDataModule(InMemoryDataModule):
    """dSprites with fixed-seed random train/val/test splits of the factor grid.

    The file is looked for at ``<root>/dsprites/`` (:data:`FILE_NAME`). If it is absent it is
    downloaded (when ``download`` is true and the machine is online); failing that, the
    procedural generator renders the same factor grid, with a one-line warning, unless
    ``require_file`` is set, in which case :class:`DataNotFoundError` says where to get it.
    Batches carry ``factors`` (B, 5) class indices and ``label`` = the shape class.

    The real data set holds about 3 GB of uint8 pixels in memory (twice that while splitting);
    ``num_train`` takes a random subset to use less. Without the file, the images are rendered
    at every setup, about 15k per second per core.

    Args:
        root: the folder that holds ``dsprites/``.
        download: try to download the file when it is missing (needs internet).
        require_file: fail when the file is missing, instead of rendering.
        num_train: training images; None: all not held out.
        num_val, num_test: held-out images.
        image_size: side of the served images (64 as in the file; other sizes are resized,
            or rendered at that size).
        channels: 1.
        num_classes: the label is the shape: 3 classes.
        **kwargs: see :class:`InMemoryDataModule`.
    """

    folder = "dsprites"

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        require_file: bool = False,
        num_train: int | None = None,
        num_val: int = 10000,
        num_test: int = 10000,
        image_size: int = 64,
        channels: int = 1,
        num_classes: int = len(SHAPES),
        **kwargs,
    ):
        super().__init__(image_size=image_size, channels=channels, num_classes=num_classes, **kwargs)
        self.root = data_folder(root, holds=f"{self.folder}/")
        self.download, self.require_file = download, require_file
        self.sizes = {"val": num_val, "test": num_test, "train": num_train}
        self._checked = False  # prepare_data has run (it may warn or download: once)

    @property
    def path(self) -> Path:
        return self.root / self.folder / FILE_NAME

    def prepare_data(self) -> None:
        """Download the file if it is missing and allowed; then fail or warn if still missing."""
        if self._checked or self.path.is_file():
            return
        self._checked = True
        problem = try_download(
            lambda: download_url(URL, str(self.path.parent), FILE_NAME), self.download, self.path.parent
        )
        if self.path.is_file():
            return
        if self.require_file:
            raise DataNotFoundError(
                f"dSprites file {FILE_NAME} not found in {self.path.parent.resolve()}. {problem} "
                f"Download it from {SOURCE} into that folder, point data.root at the folder that "
                "contains dsprites/, or set data.require_file=false to render the images instead."
            )
        log.warning("dSprites file %s not found (%s); rendering the same factor grid procedurally.", self.path, problem)

    def load_splits(self) -> dict[str, Split]:
        self.prepare_data()
        if self.path.is_file():
            images, factors = read_dsprites(self.path)
            splits = split_at_random({"image": images, "factors": factors}, self.sizes, self.seed)
        else:
            splits = split_at_random({"factors": factor_grid()}, self.sizes, self.seed)
            for split in splits.values():
                split["image"] = render_sprites(split["factors"], self.image_size)
        for split in splits.values():
            split["label"] = split["factors"][:, FACTOR_NAMES.index("shape")].clone()
        return splits
