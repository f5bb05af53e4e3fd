"""The datamodule of image sets decoded once into a memory-mapped cache (CelebA, ``folder``):
subclasses list their files, :func:`vae_zoo.data.image_cache.load_or_build` makes or reuses the
cache, and the splits are views of it (nothing but the batches is copied into RAM)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from vae_zoo.data.base import InMemoryDataModule, Split
from vae_zoo.data.image_cache import CachedImages, Preprocess, load_or_build


@dataclass
class ImageList:
    """The image files of a dataset, in the order of the cache rows.

    Attributes:
        root: folder the paths are relative to.
        files: relative paths.
        columns: per-file tensors with first dimension ``len(files)`` (``label`` (N,) int64,
            ``attributes`` (N, K) uint8, ...), carried into the batches.
    """

    root: Path
    files: list[Path]
    columns: dict[str, Tensor] = field(default_factory=dict)


class CachedImagesDataModule(InMemoryDataModule):
    """Base for image sets served from a cache file (:func:`load_or_build`).

    Subclasses list their files (:meth:`list_images`, ordered so that each split is a
    contiguous block of rows) and say how many of the cached rows each split takes
    (:meth:`split_sizes`). The splits are then views of the memory-mapped cache: nothing is
    copied into RAM but the batches.

    Args:
        root: the data folder.
        crop: side of the centred square cut from each source image before resizing, in
            source pixels; None: the largest centred square.
        cache_dir: where the cache goes; None: next to the data, else ``~/.cache/vae_zoo``.
        decode_workers: threads decoding images while caching; None: one per CPU.
        **kwargs: see :class:`InMemoryDataModule`.
    """

    #: First part of the cache file names.
    cache_name = "images"

    def __init__(
        self,
        root: str,
        crop: int | None = None,
        cache_dir: str | None = None,
        decode_workers: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.preprocess = Preprocess(self.image_size, self.channels, crop)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.decode_workers = decode_workers
        self._image_list: ImageList | None = None
        self._cache: CachedImages | None = None

    def list_images(self) -> ImageList:
        """The dataset's files (checking they are there, downloading if allowed)."""
        raise NotImplementedError

    def split_sizes(self, kept: Tensor) -> dict[str, int]:
        """Rows per split, in row order, given the source indices ``kept`` of the rows."""
        raise NotImplementedError

    @property
    def image_list(self) -> ImageList:
        """The files, listed on first use (:meth:`list_images`)."""
        if self._image_list is None:
            self._image_list = self.list_images()
        return self._image_list

    def prepare_data(self) -> None:
        """Check the files and build the cache if it is missing or stale."""
        self.cache()

    def cache(self) -> CachedImages:
        """The opened cache (built on first use)."""
        if self._cache is None:
            listed = self.image_list
            self._cache = load_or_build(
                listed.root, listed.files, self.preprocess, self.cache_name, self.cache_dir, self.decode_workers
            )
        return self._cache

    def load_splits(self) -> dict[str, Split]:
        cache = self.cache()
        tensors = {"image": cache.images, **{k: v[cache.kept] for k, v in self.image_list.columns.items()}}
        splits, start = {}, 0
        for name, size in self.split_sizes(cache.kept).items():
            splits[name] = {k: t[start : start + size] for k, t in tensors.items()}
            start += size
        return splits
