"""Large image sets, decoded, cropped and resized once into a memory-mapped uint8 cache.

Decoding a JPEG costs about a millisecond; doing it for every image of every epoch is what
makes per-item loaders slow. Here each image is decoded once (with a progress bar), centre
cropped and resized to ``image_size``, and written into one uint8 array file. Later runs map
that file into memory and serve batches from it with one index operation, like the small
datasets held in RAM (:mod:`vae_zoo.data.base`); the operating system's page cache shares it
between processes (DDP ranks).

Files of a cache, in its folder (``<stem>`` = ``<name>-<settings>-<key>``)::

    <stem>.u8     raw uint8 array (K, C, S, S) in C order, no header
    <stem>.json   manifest: shape, settings, the files that could not be read. Written last,
                  so a cache without its manifest is incomplete and never used
    <stem>.lock   exists while the cache is built, so concurrent processes (DDP ranks) build
                  it once

``<settings>`` spells out the preprocessing (``64px-rgb-crop148``) and ``<key>`` is a hash of
the ordered source list (relative path, size and modification time of every file) and the
settings: when a file is added, removed or changed, or a setting changes, the key changes
and the cache is rebuilt (the stale cache of the same settings is then deleted). Both files are
written under temporary names and renamed into place (atomic), so a crash never leaves a
half-written cache that looks complete.

Where: next to the data (``<data folder>/.vae_zoo_cache/``); if that folder cannot be written
(a read-only shared copy), in the user cache folder (``$XDG_CACHE_HOME/vae_zoo`` or
``~/.cache/vae_zoo``); or only in ``cache_dir`` when one is given (``data.cache_dir``).

Images that cannot be read (corrupt, truncated, not an image) are skipped, and their count is
reported at the end of caching; the manifest lists them with the error. The rows of the cache
are the readable images in the order given; :attr:`CachedImages.kept` maps rows to sources.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from vae_zoo.errors import ConfigError, DataError

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent builders each write their own temporary
    fcntl = None  # files and the last rename wins (same content), so only time is lost.

log = logging.getLogger(__name__)

# Bump when the file layout or the preprocessing code changes, to invalidate old caches.
CACHE_FORMAT_VERSION = 1
CACHE_FOLDER_NAME = ".vae_zoo_cache"
_KEY_LENGTH = 16  # hex digits of the source key in the file names
# Images decoded per step of the progress bar (and per round of the worker threads).
_CHUNK = 256
# What PIL raises for files that are not readable images: missing or truncated files and
# unknown formats (OSError, of which UnidentifiedImageError is one), bad headers (SyntaxError,
# ValueError) and images so large they look like decompression bombs.
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Preprocess:
    """Decode one image file and bring it to ``channels x image_size x image_size``.

    The image is converted to grey (``channels=1``) or RGB (``channels=3``); its centred
    square of side ``crop`` source pixels (or the largest centred square, when ``crop`` is
    None or larger than the image) is resized to ``image_size`` with antialiased bilinear
    filtering. For ``crop=None`` this equals torchvision's ``Resize(S)`` + ``CenterCrop(S)``
    of the ImageFolder recipe; CelebA's usual 64x64 uses ``crop=148`` (of its 178x218 images).
    JPEGs are decoded directly at 1/2, 1/4 or 1/8 scale when the crop still has at least
    ``image_size`` pixels there (libjpeg's DCT scaling), which is several times faster for
    large photos.

    Args:
        image_size: side ``S`` of the output, pixels.
        channels: 1 (grey) or 3 (RGB).
        crop: side of the centred square to keep, in source pixels; None: the largest.
    """

    image_size: int
    channels: int
    crop: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(
                f"Images can be cached with 1 (grey) or 3 (RGB) channels; got data.channels={self.channels}."
            )
        if self.image_size < 1 or (self.crop is not None and self.crop < 1):
            raise ConfigError(f"data.image_size and data.crop must be positive, got {self.image_size} and {self.crop}.")

    @property
    def tag(self) -> str:
        """The settings in a file name, e.g. ``64px-rgb-crop148``."""
        colour = "rgb" if self.channels == 3 else "grey"
        return f"{self.image_size}px-{colour}-crop{self.crop if self.crop is not None else 'max'}"

    def __call__(self, path: Path) -> np.ndarray:
        """Returns the (C, S, S) uint8 image; raises what PIL raises for unreadable files."""
        mode = "RGB" if self.channels == 3 else "L"
        with Image.open(path) as image:
            width, height = image.size
            side = min(width, height) if self.crop is None else min(self.crop, width, height)
            scale = self.image_size / side
            image.draft(mode, (math.ceil(width * scale), math.ceil(height * scale)))
            # draft() may shrink the decoded image; the crop box is in decoded pixels.
            sx, sy = image.size[0] / width, image.size[1] / height
            box = ((width - side) / 2 * sx, (height - side) / 2 * sy, (width + side) / 2 * sx, (height + side) / 2 * sy)
            resized = image.convert(mode).resize((self.image_size, self.image_size), Image.Resampling.BILINEAR, box=box)
        array = np.asarray(resized)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


@dataclass(frozen=True)
class SkippedFile:
    """A source that could not be read: its index in the source list, path and the error."""

    index: int
    path: str
    error: str


@dataclass
class CachedImages:
    """A cache opened for reading.

    Attributes:
        images: (K, C, S, S) uint8, memory-mapped from ``path`` (copy-on-write: writes to the
            tensor never reach the file).
        kept: (K,) int64, the index in the source list of each row.
        skipped: the sources that could not be read, in source order.
        path: the ``.u8`` file.
    """

    images: Tensor
    kept: Tensor
    skipped: list[SkippedFile] = field(default_factory=list)
    path: Path | None = None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vae_zoo``, or ``~/.cache/vae_zoo``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vae_zoo"


def default_workers() -> int:
    """Threads for decoding: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def source_key(root: Path, files: Sequence[Path], preprocess: Preprocess) -> str:
    """Hash of the ordered file list (relative path, size, mtime in ns) and the settings.

    A file that does not exist enters with size and mtime -1 (it is then skipped when
    caching; creating it later changes the key).
    """
    digest = hashlib.sha256(f"{CACHE_FORMAT_VERSION}|{preprocess}".encode())
    for path in files:
        try:
            stat = (root / path).stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size = mtime = -1
        digest.update(f"\n{path.as_posix()}|{size}|{mtime}".encode())
    return digest.hexdigest()[:_KEY_LENGTH]


class _CacheFiles:
    """The three files of one cache (``<stem>.u8``, ``.json``, ``.lock``) in ``folder``."""

    def __init__(self, folder: Path, prefix: str, preprocess: Preprocess, key: str):
        self.folder, self.prefix, self.key = folder, f"{prefix}-{preprocess.tag}", key
        stem = f"{self.prefix}-{key}"
        self.data, self.manifest, self.lock = (folder / f"{stem}.{ext}" for ext in ("u8", "json", "lock"))

    def open(self) -> CachedImages | None:
        """The complete cache with this key, or None (absent, incomplete or not readable)."""
        try:
            manifest = json.loads(self.manifest.read_text())
            shape = tuple(manifest["shape"])
            complete = (
                manifest["format"] == CACHE_FORMAT_VERSION
                and manifest["key"] == self.key
                and self.data.stat().st_size == math.prod(shape)
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not complete:
            return None
        skipped = [SkippedFile(**entry) for entry in manifest["skipped"]]
        is_kept = torch.ones(manifest["num_sources"], dtype=torch.bool)
        is_kept[[s.index for s in skipped]] = False
        images = torch.from_file(str(self.data), shared=False, size=math.prod(shape), dtype=torch.uint8)
        return CachedImages(images.view(shape), is_kept.nonzero().squeeze(1), skipped, self.data)

    def writable(self) -> bool:
        """Create the folder if needed and check a file can be written there."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError:
            return False
        return True

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on ``<stem>.lock`` (released if the process dies).

        The lock file is deleted on the way out. A process still waiting on it then holds a
        lock on a deleted file, which is harmless: whoever gets a lock checks for the complete
        cache before building, and the cache only ever appears complete (atomic renames).
        """
        with open(self.lock, "a") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                self.lock.unlink(missing_ok=True)

    def remove_stale(self) -> None:
        """Delete caches with the same prefix and settings but another key (older sources)."""
        same_settings = re.compile(rf"{re.escape(self.prefix)}-[0-9a-f]{{{_KEY_LENGTH}}}\.(u8|json|lock)")
        for path in self.folder.iterdir():
            if same_settings.fullmatch(path.name) and path.stem != self.data.stem:
                path.unlink(missing_ok=True)
                log.info("Removed stale cache file %s", path)


def _decode_all(
    paths: Sequence[Path], preprocess: Preprocess, workers: int
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """Yield ``(index, image, None)`` or ``(index, None, error)`` for each path, in order."""

    def decode(path: Path) -> tuple[np.ndarray | None, str | None]:
        try:
            return preprocess(path), None
        except _UNREADABLE as error:
            return None, f"{type(error).__name__}: {error}"

    # PIL releases the GIL while decoding and resizing, so threads run in parallel.
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        for start in range(0, len(paths), _CHUNK):
            results = pool.map(decode, paths[start : start + _CHUNK])
            for index, (image, error) in enumerate(results, start):
                yield index, image, error


def _build(
    files: _CacheFiles, root: Path, sources: Sequence[Path], preprocess: Preprocess, workers: int, description: str
) -> None:
    """Decode every source into ``files.data`` and write the manifest (see the module doc)."""
    shape = (len(sources), preprocess.channels, preprocess.image_size, preprocess.image_size)
    suffix = f".tmp-{os.getpid()}"
    data_tmp, manifest_tmp = (
        files.data.with_name(files.data.name + suffix),
        files.manifest.with_name(files.manifest.name + suffix),
    )
    images = np.memmap(data_tmp, dtype=np.uint8, mode="w+", shape=shape)
    skipped, rows = [], 0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task(description, total=len(sources))
        for index, image, error in _decode_all([root / p for p in sources], preprocess, workers):
            if image is None:
                skipped.append(SkippedFile(index, sources[index].as_posix(), error))
            else:
                images[rows] = image
                rows += 1
            progress.advance(task)
    images.flush()
    del images
    if rows == 0:
        data_tmp.unlink()
        raise DataError(
            f"None of the {len(sources)} images in {root} could be read (first error: {skipped[0].path}: "
            f"{skipped[0].error}). Check that the folder holds image files."
        )
    os.truncate(data_tmp, rows * math.prod(shape[1:]))  # drop the rows of skipped files
    os.replace(data_tmp, files.data)
    manifest = {
        "format": CACHE_FORMAT_VERSION,
        "key": files.key,
        "shape": [rows, *shape[1:]],
        "num_sources": len(sources),
        "source_folder": str(root),
        "settings": {"image_size": preprocess.image_size, "channels": preprocess.channels, "crop": preprocess.crop},
        "skipped": [vars(s) for s in skipped],
    }
    manifest_tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(manifest_tmp, files.manifest)  # the cache is complete from here on
    files.remove_stale()
    if skipped:
        examples = ", ".join(s.path for s in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        log.warning(
            "Skipped %d of %d images that could not be read (%s); the list with the errors is in %s",
            len(skipped),
            len(sources),
            examples,
            files.manifest,
        )


def load_or_build(
    root: Path,
    sources: Sequence[Path],
    preprocess: Preprocess,
    name: str,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> CachedImages:
    """Open the cache of ``sources`` under ``preprocess``, building it first if needed.

    Args:
        root: the data folder; ``sources`` are relative to it.
        sources: image files in the order of the cache rows (at least one).
        preprocess: decoding, cropping and resizing settings.
        name: first part of the cache file names (e.g. ``celeba``).
        cache_dir: the only folder to use; None: next to the data, else the user cache.
        workers: decoding threads (default: :func:`default_workers`).

    Raises:
        DataError: no usable cache folder, or no source could be read.
    """
    key = source_key(root, sources, preprocess)
    if cache_dir is not None:
        candidates = [_CacheFiles(Path(cache_dir).expanduser(), name, preprocess, key)]
    else:
        # In the shared user cache, the name also says which data folder it came from.
        folder_id = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
        candidates = [
            _CacheFiles(root / CACHE_FOLDER_NAME, name, preprocess, key),
            _CacheFiles(user_cache_dir(), f"{name}-{folder_id}", preprocess, key),
        ]
    for files in candidates:
        if (cached := files.open()) is not None:
            return cached
    files = next((files for files in candidates if files.writable()), None)
    if files is None:
        tried = ", ".join(str(f.folder) for f in candidates)
        raise DataError(
            f"No folder to write the image cache to: tried {tried}. Set data.cache_dir to a writable folder."
        )
    with files.locked():
        if (cached := files.open()) is None:  # another process may have built it meanwhile
            description = f"Caching {len(sources)} images as {preprocess.tag} in {files.folder}"
            _build(files, root, sources, preprocess, workers or default_workers(), description)
            cached = files.open()
    if cached is None:
        raise DataError(f"The image cache {files.data} was written but cannot be read back; is {files.folder} full?")
    return cached
