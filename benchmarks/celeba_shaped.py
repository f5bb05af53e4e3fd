"""Training speed on CelebA-shaped images: 64 x 64 RGB, the conv VAE and β-VAE, fp32 against
bf16 mixed precision, with and without the images held in GPU memory (issue 27).

    python benchmarks/celeba_shaped.py --device gpu                       # on a GPU machine (benchmarks/gpu.sh)
    python benchmarks/celeba_shaped.py --device cpu --images 512 --epochs 1 --variants fp32   # a check on the CPU

The images are synthetic, written once as PNG files into a temporary folder and read by
``data=folder`` (the path a user's own CelebA-like folder takes: decoded once into the image
cache, then served from memory): ``--images`` smooth random colour fields with a few bright
blobs, 64 x 64, so that the conv net, the Gaussian p(x|z) and the data path do the work of
``data=celeba``. Each (model, variant) trains ``--epochs`` epochs with vae_zoo's defaults for the
folder data (``conf/training/folder.yaml``; batch 128), the default callbacks and the CSV logger,
``test=false``. Printed per run, as ``benchmarks/overhead.py`` measures them (its ``StepClock``):
the training rate in images/s over the steps after the first 20 of the last epoch (wall time
between the ends of successive steps: data, logging and callbacks included) and the wall time
of the last epoch, with its validation, pictures and checkpoints.

Variants: ``fp32`` (``trainer.precision=32-true``), ``bf16`` (``trainer.precision=bf16-mixed``),
``fp32_on_device`` and ``bf16_on_device`` (``data.on_device=true``: the uint8 images in GPU
memory, batches gathered there; ignored on the CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train

VARIANTS = {
    "fp32": ["trainer.precision=32-true"],
    "bf16": ["trainer.precision=bf16-mixed"],
    "fp32_on_device": ["trainer.precision=32-true", "data.on_device=true"],
    "bf16_on_device": ["trainer.precision=bf16-mixed", "data.on_device=true"],
}


def write_images(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` 64 x 64 RGB PNGs: a smooth random colour field and three bright blobs each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 64), np.linspace(0, 1, 64)), axis=-1)
    for index in range(count):
        low = rng.uniform(0, 1, size=(4, 4, 3))
        field = np.kron(low, np.ones((16, 16, 1)))
        for _ in range(3):
            centre, radius = rng.uniform(0.2, 0.8, size=2), rng.uniform(0.05, 0.2)
            field += np.exp(-((grid - centre) ** 2).sum(-1) / radius**2)[..., None] * rng.uniform(0, 1, size=3)
        Image.fromarray((np.clip(field / field.max(), 0, 1) * 255).astype(np.uint8)).save(folder / f"{index:06d}.png")


def run(images: Path, model: str, variant: str, device: str, epochs: int, output: Path) -> dict[str, float]:
    """The training rate (images/s after the first steps) and the last epoch's seconds of one run,
    timed by :class:`overhead.StepClock` among the run's callbacks."""
    clock = output / "clock.json"
    cfg = compose_config(
        [
            "data=folder",
            f"data.root={images}",
            f"model={model}",
            f"trainer.accelerator={device}",
            f"trainer.max_epochs={epochs}",
            "test=false",
            "callbacks.progress_bar=null",
            "+callbacks.step_clock._target_=overhead.StepClock",
            f"+callbacks.step_clock.path={clock}",
            *VARIANTS[variant],
        ],
        output_dir=output,
    )
    train(cfg)
    return json.loads(clock.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="gpu", help="gpu or cpu (Lightning's accelerator name)")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["vae", "beta_vae"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (the median is printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        images = Path(scratch) / "images"
        write_images(images, args.images)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for round_index in range(args.rounds):
            for model in args.models:
                for variant in args.variants:
                    output = Path(scratch) / f"run-{model}-{variant}-{round_index}"
                    results.setdefault((model, variant), []).append(
                        run(images, model, variant, args.device, args.epochs, output)
                    )
        print(
            f"\nCelebA-shaped 64x64x3, {args.images} synthetic images, batch 128, {args.device}, {args.epochs} epochs"
        )
        print("| model | variant | images/s (training steps) | last epoch, s (with validation) |")
        print("|---|---|---:|---:|")
        for (model, variant), runs in results.items():
            rate = statistics.median(r["img_per_s"] for r in runs)
            epoch = statistics.median(r["epoch_s"] for r in runs)
            print(f"| {model} | {variant} | {rate:,.0f} | {epoch:.1f} |")


if __name__ == "__main__":
    main()
