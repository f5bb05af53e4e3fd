"""Start-up cost of the commands, against the floor of importing torch and Lightning (issue 14).

    python benchmarks/startup.py --rounds 5
    python benchmarks/startup.py --rounds 5 --source before=/tmp/vae_zoo_before   # a second checkout, paired

Each round runs every command once per source tree, in an order rotated from round to round
(so a slow moment of the machine hits every command alike), and prints the median wall time
and the range over rounds:

- ``import torch, lightning``: the floor every training command pays (Lightning itself imports
  torchmetrics, and through it torchvision's models and torch._dynamo);
- ``train --help`` and ``train --cfg job``: answered by Hydra from the configs;
- ``first step``: a whole ``python -m vae_zoo.train`` process that trains one step (imports,
  data, model, one optimiser step, last.ckpt, exit): the time to the first step, plus what
  one step and the exit cost.

A source tree is put first on ``PYTHONPATH``, so the installed environment serves both trees.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ONE_STEP = [
    "trainer.max_steps=1",
    "trainer.limit_val_batches=0",
    "trainer.num_sanity_val_steps=0",
    "test=false",
    "optimized_metric=train/loss",
    "callbacks.progress_bar=null",
    "data.num_train=256",
    "data.num_val=64",
    "data.num_test=64",
]
COMMANDS = {
    "import torch, lightning": ["-c", "import torch, lightning"],
    "train --help": ["-m", "vae_zoo.train", "--help"],
    "train --cfg job": ["-m", "vae_zoo.train", "--cfg", "job"],
    "first step": ["-m", "vae_zoo.train", *ONE_STEP],
}


def run(source: Path, args: list[str], log_dir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(source), "VAE_ZOO_LOG_DIR": str(log_dir)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], env=env, cwd=log_dir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{args} failed in {source}:\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--source", action="append", default=[], help="name=folder of another checkout to compare")
    args = parser.parse_args()
    sources = {"this tree": Path(__file__).resolve().parents[1]}
    sources.update({name: Path(folder).resolve() for name, folder in (s.split("=", 1) for s in args.source)})
    jobs = [(name, command) for name in sources for command in COMMANDS]
    times: dict[tuple[str, str], list[float]] = {job: [] for job in jobs}
    with tempfile.TemporaryDirectory() as log_dir:
        for round_ in range(args.rounds):
            shift = round_ % len(jobs)
            for name, command in jobs[shift:] + jobs[:shift]:
                times[(name, command)].append(run(sources[name], COMMANDS[command], Path(log_dir)))
    load = os.getloadavg()[0]
    table = Table(
        title=escape(f"start-up, seconds: median [range] of {args.rounds} rounds (load average at the end {load:.2f})")
    )
    table.add_column("command")
    for name in sources:
        table.add_column(name, justify="right")
    for command in COMMANDS:
        table.add_row(
            command,
            *(
                escape(
                    f"{statistics.median(times[(n, command)]):.2f} [{min(times[(n, command)]):.2f}-{max(times[(n, command)]):.2f}]"
                )
                for n in sources
            ),
        )
    Console().print(table)


if __name__ == "__main__":
    main()
