"""Small data sets written in the real file formats, with content the tests can recognise.

Each builder writes what the real distribution would put on disk (same names, layout and
encoding) and returns what a reader should find, so tests compare against known truth.
"""

from __future__ import annotations

import csv
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vae_zoo.data.sprites import FACTOR_SIZES, factor_values, render_sprites

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
# CelebA's aligned images are 178 wide and 218 high; the usual crop keeps the centred 148.
CELEBA_WIDTH, CELEBA_HEIGHT, CELEBA_CROP = 178, 218, 148


def write_cifar10(root: Path, per_batch: int = 12, num_test: int = 20, seed: int = 0) -> Path:
    """Write ``<root>/cifar-10-batches-py/`` as the CIFAR-10 tarball unpacks: five training
    batches and a test batch, each a Python-2-style pickle of a dict with bytes keys.

    Image ``i`` of class ``k`` has a red plane of constant ``20 k``, a green plane of
    per-pixel noise and a blue plane of constant 200, so channel order and labels can be
    checked. Returns the folder.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", num_test)]:
        labels = rng.integers(0, 10, size=n)
        planes = np.empty((n, 3, 1024), dtype=np.uint8)
        planes[:, 0] = (20 * labels)[:, None]
        planes[:, 1] = rng.integers(0, 256, size=(n, 1024))
        planes[:, 2] = 200
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels.tolist(),
            b"data": planes.reshape(n, 3072),
            b"filenames": [f"image_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {
                b"label_names": [
                    b"airplane",
                    b"automobile",
                    b"bird",
                    b"cat",
                    b"deer",
                    b"dog",
                    b"frog",
                    b"horse",
                    b"ship",
                    b"truck",
                ]
            },
            f,
            protocol=2,
        )
    return folder


def write_dsprites(root: Path, n: int = 240, seed: int = 0) -> tuple[Path, torch.Tensor]:
    """Write ``<root>/dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` with ``n``
    rows of the factor grid (in grid order, as in the real file), rendered by the procedural
    generator, with the real file's arrays: ``imgs`` (n, 64, 64) uint8 in {0, 1},
    ``latents_classes`` and ``latents_values`` (n, 6) with the constant colour first, and a
    pickled ``metadata`` dict. Returns the path and the (n, 5) factor classes written."""
    rng = np.random.default_rng(seed)
    grid_size = int(np.prod(FACTOR_SIZES))
    rows = np.sort(rng.choice(grid_size, size=n, replace=False))
    classes = torch.from_numpy(np.stack(np.unravel_index(rows, FACTOR_SIZES), axis=1)).long()
    images = (render_sprites(classes, image_size=64)[:, 0] // 255).numpy()
    colour = np.zeros((n, 1), dtype=np.int64)
    folder = root / "dsprites"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    np.savez_compressed(
        path,
        imgs=images,
        latents_classes=np.concatenate([colour, classes.numpy()], axis=1),
        latents_values=np.concatenate([colour + 1.0, factor_values(classes).double().numpy()], axis=1),
        metadata=np.array({"description": "dSprites-style fixture", "latents_sizes": [1, *FACTOR_SIZES]}, dtype=object),
    )
    return path, classes


def celeba_face(first_attribute: int) -> Image.Image:
    """A 178x218 'face': pure red outside the centred 148x148 square, and inside it grey 200
    when the image's first attribute is 1, grey 60 when it is -1."""
    pixels = np.zeros((CELEBA_HEIGHT, CELEBA_WIDTH, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    top, left = (CELEBA_HEIGHT - CELEBA_CROP) // 2, (CELEBA_WIDTH - CELEBA_CROP) // 2
    pixels[top : top + CELEBA_CROP, left : left + CELEBA_CROP] = 200 if first_attribute == 1 else 60
    return Image.fromarray(pixels)


def write_celeba(
    root: Path, layout: str = "torchvision", partition_sizes=(10, 4, 5), seed: int = 0
) -> tuple[Path, dict]:
    """Write a small CelebA in ``<root>/celeba/``.

    ``layout="torchvision"``: ``img_align_celeba/*.jpg``, ``list_eval_partition.txt``
    (``<image> <partition>``) and ``list_attr_celeba.txt`` (a count, the 40 names, then
    ``<image>`` and 40 values of -1/1 aligned with spaces), as on CelebA's Google Drive.
    ``layout="kaggle"``: ``img_align_celeba/img_align_celeba/*.jpg`` and the two tables as
    ``.csv`` with an ``image_id`` header, as in the Kaggle zip.

    Partitions are assigned at random (files are numbered 000001.jpg, ... as in CelebA), so
    splits are not contiguous runs of names. Returns the celeba folder and the truth:
    ``{"partition": {name: 0/1/2}, "attributes": {name: 40 values of -1/1}}``.
    """
    rng = np.random.default_rng(seed)
    n = sum(partition_sizes)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    partition = rng.permutation(np.repeat(np.arange(3), partition_sizes))
    attributes = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRIBUTES)))
    base = root / "celeba"
    images = base / ("img_align_celeba" if layout == "torchvision" else "img_align_celeba/img_align_celeba")
    images.mkdir(parents=True)
    for name, row in zip(names, attributes):
        celeba_face(row[0]).save(images / name, quality=95)
    if layout == "torchvision":
        (base / "list_eval_partition.txt").write_text("".join(f"{name} {p}\n" for name, p in zip(names, partition)))
        lines = [f"{n}\n", " ".join(CELEBA_ATTRIBUTES) + " \n"]
        lines += [name + " " + " ".join(f"{v:2d}" for v in row) + "\n" for name, row in zip(names, attributes)]
        (base / "list_attr_celeba.txt").write_text("".join(lines))
    else:
        with open(base / "list_eval_partition.csv", "w", newline="") as f:
            csv.writer(f).writerows([["image_id", "partition"], *zip(names, partition.tolist())])
        with open(base / "list_attr_celeba.csv", "w", newline="") as f:
            csv.writer(f).writerows(
                [["image_id", *CELEBA_ATTRIBUTES], *([name, *row.tolist()] for name, row in zip(names, attributes))]
            )
    truth = {
        "partition": dict(zip(names, partition.tolist())),
        "attributes": {name: row.tolist() for name, row in zip(names, attributes)},
    }
    return base, truth


def write_image_folder(root: Path, per_class: int = 8, seed: int = 0) -> dict:
    """Write an ImageFolder-style tree ``root/{dark,light}/*`` of JPEGs and PNGs of assorted
    sizes (portrait, landscape, greyscale, palette), plus files a loader must cope with:
    ``dark/broken.jpg`` (not an image at all), ``light/truncated.jpg`` (a JPEG cut in half),
    ``notes.txt`` and ``.hidden/x.png`` (ignored).

    Class ``dark`` images have every pixel at 40, ``light`` ones at 220 (up to compression).
    Returns ``{"readable": count, "unreadable": [relative paths], "classes": [names]}``.
    """
    rng = np.random.default_rng(seed)
    for _label, (name, value) in enumerate((("dark", 40), ("light", 220))):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            width, height = (int(v) for v in rng.integers(40, 160, size=2))
            mode = {1: "L", 2: "L", 3: "P"}.get(i % 4, "RGB")  # "P" (palette) only as PNG
            image = Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).convert(mode)
            suffix = ".png" if i % 2 else ".JPG"  # extensions match in any case
            image.save(folder / f"{name}_{i}{suffix}")
    (root / "dark" / "broken.jpg").write_bytes(b"this is not a JPEG")
    whole = (root / "light" / "light_0.JPG").read_bytes()
    (root / "light" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.new("RGB", (50, 50)).save(root / ".hidden" / "x.png")
    return {
        "readable": 2 * per_class,
        "unreadable": ["dark/broken.jpg", "light/truncated.jpg"],
        "classes": ["dark", "light"],
    }


def python2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """The bytes Python 2's cPickle writes (protocol 2) for ``{"data": data, "labels": labels}``
    with ``data`` a uint8 numpy array, as in the real CIFAR-10 batches: ``str`` keys and the
    array's raw bytes as ``BINSTRING`` (read back as bytes with ``encoding="bytes"``), and
    numpy 1's global ``numpy.core.multiarray._reconstruct``. Python 3 cannot write this (it
    pickles bytes as ``_codecs.encode`` under protocol 2), so the opcodes are spelled out."""

    def string(value: bytes) -> bytes:  # a Python 2 str
        if len(value) < 256:
            return b"U" + bytes([len(value)]) + value  # SHORT_BINSTRING
        return b"T" + struct.pack("<I", len(value)) + value  # BINSTRING

    def integer(value: int) -> bytes:
        if 0 <= value < 256:
            return b"K" + bytes([value])  # BININT1
        if 0 <= value < 65536:
            return b"M" + struct.pack("<H", value)  # BININT2
        return b"J" + struct.pack("<i", value)  # BININT

    assert data.dtype == np.uint8
    reduce3 = b"\x87R"  # TUPLE3, REDUCE
    dtype = b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + reduce3
    dtype += b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb"  # state, BUILD
    shape = b"(" + b"".join(integer(n) for n in data.shape) + b"t"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b") + reduce3
    # (1, shape, dtype, False, raw)
    array += b"(" + integer(1) + shape + dtype + b"\x89" + string(data.tobytes()) + b"tb"
    label_list = b"](" + b"".join(integer(n) for n in labels) + b"e"  # EMPTY_LIST, MARK, ..., APPENDS
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list + b"u."
