"""Python-level calls a training step makes, vae_zoo against the plain loop (issue 27).

    python benchmarks/step_calls.py --mnist-root ../shared/data
    python benchmarks/step_calls.py --mnist-root ../shared/data --net conv --top 40

A count, not a time: cProfile counts every Python-level function call, and the count does not
depend on what else the machine is doing, so it compares commits on a noisy machine where the
seconds of ``benchmarks/overhead.py`` cannot. Each loop runs 100 and then 300 steps of real MNIST
(batch 128) under cProfile; the difference over the 200 extra steps is the steady per-step count
(start-up, the first steps and the end of the run cancel). vae_zoo runs
``vae_zoo.run.experiment.train`` on what ``python -m vae_zoo.train data=mnist net=<net>`` composes,
with the progress bar off (its redraws are timed, not counted per step) and no validation; the
plain loop steps fused Adam on ``overhead.py``'s hand-written loss
(:func:`overhead.plain_negative_elbo`), over the same modules. The top functions by calls per
step show where vae_zoo's extra calls come from.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
from pathlib import Path

import torch
from hydra.utils import instantiate
from overhead import BATCH_SIZE, plain_negative_elbo  # this folder is on sys.path when the script runs

from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train


def counted(run) -> pstats.Stats:
    profile = cProfile.Profile()
    profile.enable()
    run()
    profile.disable()
    return pstats.Stats(profile)


def per_step(short: pstats.Stats, long: pstats.Stats, extra_steps: int) -> dict[tuple, float]:
    """Calls per step of each function: (calls in the long run - calls in the short one) / steps."""
    before = {key: value[1] for key, value in short.stats.items()}
    return {key: (value[1] - before.get(key, 0)) / extra_steps for key, value in long.stats.items()}


def vae_zoo_steps(net: str, mnist_root: str, overrides: list[str], steps: int) -> pstats.Stats:
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config(
            [
                "data=mnist",
                f"net={net}",
                f"data.root={mnist_root}",
                "data.download=false",
                f"trainer.max_steps={steps}",
                "trainer.max_epochs=1",
                "trainer.limit_val_batches=0",
                "test=false",
                "callbacks.progress_bar=null",
                *overrides,
            ],
            output_dir=run_dir,
        )
        return counted(lambda: train(cfg))


def plain_steps(net: str, mnist_root: str, overrides: list[str], steps: int) -> pstats.Stats:
    cfg = compose_config(
        ["data=mnist", f"net={net}", f"data.root={mnist_root}", "data.download=false", *overrides], output_dir="unused"
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    images = datamodule.splits["train"]["image"]
    model = instantiate(cfg.model)
    encoder, decoder = model.encoder, model.decoder
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3, fused=True)

    def run() -> None:
        for _ in range(steps):
            x = images[torch.randint(0, len(images), (BATCH_SIZE,))].float().div_(255.0)
            loss = plain_negative_elbo(encoder, decoder, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return counted(run)


def where(key: tuple) -> str:
    filename, line, name = key
    for marker in ("site-packages/", "vae_zoo/"):
        if marker in filename:
            filename = filename.split(marker)[-1]
    return name if filename == "~" else f"{filename}:{line} {name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw (e.g. ../shared/data)")
    parser.add_argument("--net", default="mlp", choices=["mlp", "conv"])
    parser.add_argument("--top", type=int, default=25, help="how many of vae_zoo's most called functions to list")
    parser.add_argument("--overrides", nargs="*", default=[], help="config overrides for both loops")
    args = parser.parse_args()
    mnist_root = str(Path(args.mnist_root).resolve())
    runs = {
        name: [steps_of(args.net, mnist_root, args.overrides, steps) for steps in (100, 300)]
        for name, steps_of in (("plain", plain_steps), ("vae_zoo", vae_zoo_steps))
    }
    totals = {name: (long.total_calls - short.total_calls) / 200 for name, (short, long) in runs.items()}
    print(
        f"{args.net}: Python calls a training step, plain loop {totals['plain']:,.0f}, vae_zoo {totals['vae_zoo']:,.0f}"
    )
    print(f"vae_zoo's {args.top} most called functions, calls a step:")
    top = sorted(per_step(*runs["vae_zoo"], 200).items(), key=lambda item: -item[1])[: args.top]
    for key, calls in top:
        print(f"  {calls:7.1f}  {where(key)}")


if __name__ == "__main__":
    main()
