"""Batches per second of vae_zoo's data feed against the usual torchvision pipeline.

    python benchmarks/data_feed.py --mnist-root ../shared/data [--folder PATH] [--batches 200]

(a) MNIST, training batches of 128 in shuffled order, each ending as float32 in [0, 1]:
    ``MNISTDataModule.train_dataloader()`` plus its ``on_after_batch_transfer`` (uint8 ->
    float, here on the CPU), against ``torchvision.datasets.MNIST`` + ``ToTensor()`` +
    ``DataLoader(batch_size=128, shuffle=True, num_workers=w)`` for w in {0, 2}.
(b) A JPEG folder at 64x64: ``ImageFolderDataModule`` serving from its cache (built once
    before timing; the build time is reported on its own), against
    ``torchvision.datasets.ImageFolder`` + ``Resize(64)`` + ``CenterCrop(64)`` + ``ToTensor()`` +
    ``DataLoader`` with the same batch size and workers. Without ``--folder``, 5000 JPEGs of
    assorted sizes are generated in a temporary folder. A folder of your own must be in
    ImageFolder's layout (``root/<class>/<image>``) for the torchvision side.

Each figure is batches per second over ``--batches`` batches (fewer if an epoch ends first),
timed after the first batch, so worker start-up is not counted. The ratio compares ours with
the best torchvision setting. The machine's load average is printed with the results: run it
on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from vae_zoo.data import ImageFolderDataModule, MNISTDataModule

BATCH_SIZE = 128
BASELINE_WORKERS = (0, 2)


def batches_per_second(batches: Iterable, num_batches: int, finish: Callable = lambda batch: batch) -> float:
    """Iterate ``num_batches`` batches (after one untimed warm-up batch), calling ``finish``
    on each; returns batches per second."""
    iterator = iter(batches)
    finish(next(iterator))
    count, start = 0, time.perf_counter()
    for batch in iterator:
        finish(batch)
        count += 1
        if count == num_batches:
            break
    return count / (time.perf_counter() - start)


def ours(datamodule, num_batches: int) -> float:
    datamodule.setup()
    loader = datamodule.train_dataloader()
    return batches_per_second(loader, num_batches, lambda batch: datamodule.on_after_batch_transfer(batch, 0))


def best_torchvision(dataset, num_batches: int) -> tuple[float, int]:
    """(batches per second, workers) of the fastest DataLoader setting."""
    results = []
    for workers in BASELINE_WORKERS:
        loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers)
        results.append((batches_per_second(loader, num_batches), workers))
    return max(results)


def mnist_for_torchvision(mnist_root: Path, scratch: Path) -> datasets.MNIST:
    """torchvision's MNIST reads only extracted files: copy the .gz files to ``scratch`` and
    let it verify and extract them there (no network: the MD5s match)."""
    raw = scratch / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in (mnist_root / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(gz, raw)
    return datasets.MNIST(str(scratch), train=True, download=True, transform=transforms.ToTensor())


def make_jpeg_folder(root: Path, count: int = 5000, seed: int = 0) -> Path:
    """``count`` JPEGs of 100 to 400 pixels a side (smooth random colour fields), in two class
    folders so that torchvision's ImageFolder takes them."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        width, height = (int(v) for v in rng.integers(100, 401, size=2))
        coarse = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR).save(
            folder / f"{i:05d}.jpg", quality=90
        )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-root", type=Path, default=Path("../shared/data"), help="folder holding MNIST/raw/*.gz")
    parser.add_argument("--folder", type=Path, help="a JPEG folder in ImageFolder layout (default: generate 5000)")
    parser.add_argument("--batches", type=int, default=200, help="batches timed per setting")
    args = parser.parse_args()
    torch.manual_seed(0)

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        mnist = MNISTDataModule(root=str(args.mnist_root), download=False, batch_size=BATCH_SIZE)
        our_mnist = ours(mnist, args.batches)
        their_mnist, workers = best_torchvision(mnist_for_torchvision(args.mnist_root, scratch / "tv"), args.batches)
        rows.append(("MNIST 28x28", our_mnist, their_mnist, workers, None))

        folder = args.folder or make_jpeg_folder(scratch / "jpegs")
        folder_data = ImageFolderDataModule(
            root=str(folder), image_size=64, batch_size=BATCH_SIZE, cache_dir=str(scratch / "cache")
        )
        start = time.perf_counter()
        folder_data.prepare_data()
        cache_seconds = time.perf_counter() - start
        our_folder = ours(folder_data, args.batches)
        pipeline = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor()])
        their_folder, workers = best_torchvision(datasets.ImageFolder(str(folder), transform=pipeline), args.batches)
        rows.append(
            (
                f"JPEG folder at 64x64 ({len(folder_data.image_list.files)} files)",
                our_folder,
                their_folder,
                workers,
                cache_seconds,
            )
        )

    table = Table(title=f"Training batches of {BATCH_SIZE} per second", header_style="bold")
    for column in ("data", "vae_zoo", "torchvision (best)", "speed-up", "one-time cache build"):
        table.add_column(column, justify="left" if column == "data" else "right")
    for name, our_rate, their_rate, workers, cache_seconds in rows:
        cache = f"{cache_seconds:.1f} s" if cache_seconds is not None else "-"
        table.add_row(
            name, f"{our_rate:,.0f}", f"{their_rate:,.1f} ({workers} workers)", f"{our_rate / their_rate:,.0f}x", cache
        )
    console = Console(width=max(Console().width, 110))  # the table unwrapped, also in a log file
    console.print(table)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(
        f"CPUs: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, load average (1/5/15 min): {load}"
    )


if __name__ == "__main__":
    main()
