"""The image cache: built once, memory-mapped, rebuilt when sources or settings change, never
used half-written, and placed elsewhere when the data folder cannot be written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from vae_zoo.data import ImageFolderDataModule
from vae_zoo.data.image_cache import CACHE_FOLDER_NAME, Preprocess, load_or_build

from data_fixtures import write_image_folder

SPLIT = {"val_fraction": 0.2, "test_fraction": 0.2, "image_size": 16}


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    write_image_folder(tmp_path / "photos", per_class=6)
    return tmp_path / "photos"


def cache_files(folder: Path, suffix: str = ".u8") -> list[Path]:
    return sorted((folder / CACHE_FOLDER_NAME).glob(f"*{suffix}"))


def mapped_from(tensor: torch.Tensor) -> Path | None:
    """The file whose memory map holds ``tensor``'s data, from /proc/self/maps (Linux)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end and len(fields) == 6:
            return Path(fields[5])
    return None


def all_images(dm: ImageFolderDataModule) -> torch.Tensor:
    return torch.cat([split["image"] for split in dm.splits.values()])


def load(photos: Path, **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(root=str(photos), **{**SPLIT, **kwargs})
    dm.setup()
    return dm


def test_splits_are_views_of_the_memory_mapped_cache(photos):
    dm = load(photos)
    [data_file] = cache_files(photos)
    assert data_file.stat().st_size == 12 * 3 * 16 * 16  # the 12 readable images, nothing else
    for split in dm.splits.values():
        assert mapped_from(split["image"]) == data_file
    assert not list((photos / CACHE_FOLDER_NAME).glob("*.lock"))  # the build lock is gone
    manifest = json.loads(data_file.with_suffix(".json").read_text())
    assert manifest["shape"] == [12, 3, 16, 16] and len(manifest["skipped"]) == 2


def test_cache_is_reused_then_rebuilt_when_a_source_or_a_setting_changes(photos):
    first = all_images(load(photos))
    [data_file] = cache_files(photos)
    built_at = data_file.stat().st_mtime_ns
    again = load(photos)
    assert data_file.stat().st_mtime_ns == built_at  # opened, not rebuilt
    assert torch.equal(all_images(again), first)

    # a changed source (new bytes, new mtime): a new cache, and the stale one is removed
    (photos / "light" / "light_0.JPG").write_bytes((photos / "dark" / "dark_0.JPG").read_bytes())
    os.utime(photos / "light" / "light_0.JPG", ns=(built_at + 10**9, built_at + 10**9))
    changed = load(photos)
    [new_file] = cache_files(photos)
    assert new_file != data_file and not data_file.with_suffix(".json").exists()
    changed_rows = (all_images(changed) != first).flatten(1).any(1)
    assert changed_rows.sum() == 1

    # other preprocessing settings: a cache of their own, next to the first
    load(photos, crop=20)
    load(photos, image_size=8)
    names = [p.name for p in cache_files(photos)]
    assert len(names) == 3 and any("16px-rgb-crop20" in n for n in names) and any("8px-rgb-cropmax" in n for n in names)


def test_a_half_written_cache_is_never_used(photos):
    expected = all_images(load(photos)).clone()  # not a view of the file the test damages
    [data_file] = cache_files(photos)
    complete = data_file.read_bytes()
    # a crash while writing the rows: the manifest still describes the full array
    data_file.write_bytes(complete[: len(complete) // 2])
    assert torch.equal(all_images(load(photos)), expected)
    assert data_file.read_bytes() == complete
    # a crash before the manifest was renamed into place: no manifest, no cache
    data_file.with_suffix(".json").unlink()
    data_file.write_bytes(bytes(len(complete)))
    assert torch.equal(all_images(load(photos)), expected)
    assert data_file.read_bytes() == complete


def test_unwritable_data_folder_falls_back_to_the_user_cache(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (photos / CACHE_FOLDER_NAME).write_text("a file where the cache folder would go")
    dm = load(photos)
    [data_file] = (tmp_path / "xdg" / "vae_zoo").glob("*.u8")
    assert mapped_from(dm.splits["train"]["image"]) == data_file
    explicit = load(photos, cache_dir=str(tmp_path / "mine"))
    assert len(list((tmp_path / "mine").glob("*.u8"))) == 1
    assert torch.equal(explicit.splits["val"]["image"], dm.splits["val"]["image"])


def test_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(Exception, match="None of the 1 images .* could be read"):
        load_or_build(tmp_path / "bad", [Path("a.jpg")], Preprocess(16, 3), "images")
