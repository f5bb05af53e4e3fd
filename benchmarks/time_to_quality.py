"""Wall time and peak memory to reach a validation ELBO on dynamically binarized MNIST (issue 18).

    python benchmarks/time_to_quality.py --mnist-root ../shared/data --nets mlp conv
    python benchmarks/time_to_quality.py --mnist-root ../shared/data --nets conv --source before=/tmp/vae_zoo_before
    python benchmarks/time_to_quality.py --mnist-root ../shared/data --target -100 --max-epochs 40
    python benchmarks/time_to_quality.py --mnist-root ../shared/data --nets conv --skip-plain --overrides model.optimizer.lr=1e-3

Each run is one fresh process, timed from its start (imports, data, everything) to the end of
the validation pass whose ELBO first reaches ``--target`` nats per example (default −100), on the
5,000 validation images (binarized once with the data's fixed seed):

- ``vae_zoo``: ``python -m vae_zoo.train data=mnist data.binarize=dynamic net=<net> test=false``
  with every default (learning rate, KL warm-up, callbacks, pictures, checkpoints), the epoch
  limit raised to ``--max-epochs`` and Lightning's ``EarlyStopping(stopping_threshold=target)``
  added to stop it there. ``--source name=folder`` runs another checkout the same way.
- ``plain``: a plain loop on the same encoder/decoder modules, fed from the same uint8 tensors
  (a fresh Bernoulli sample of every training batch), ``torch.optim.Adam(lr=1e-3)`` with torch's
  default implementation and a constant KL weight (what such a loop is usually written with),
  and the same single-sample validation ELBO after every epoch.

Printed per run: seconds to the target, the epoch it was reached at, the ELBO there, and the
process's peak resident memory (``ru_maxrss``). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_plain(net: str, mnist_root: str, target: float, max_epochs: int) -> dict:
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from vae_zoo.run.config import compose_config

    torch.set_flush_denormal(True)
    cfg = compose_config(
        ["data=mnist", "data.binarize=dynamic", f"net={net}", f"data.root={mnist_root}", "data.download=false"],
        output_dir="unused",
    )
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    train_images, val_images = datamodule.splits["train"]["image"], datamodule.splits["val"]["image"]
    model = instantiate(cfg.model)
    encoder, decoder = model.encoder, model.decoder
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)

    def negative_elbo(x: torch.Tensor) -> torch.Tensor:  # (B,) nats
        mu, logvar = encoder(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").flatten(1).sum(1)
        return recon + 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)

    for epoch in range(max_epochs):  # noqa: B007 (read after the loop)
        order = torch.randperm(len(train_images))
        for start in range(0, len(order), 128):
            x = torch.bernoulli(train_images[order[start : start + 128]].float().div_(255.0))
            loss = negative_elbo(x).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_elbo = (
                -torch.cat(
                    [
                        negative_elbo(val_images[i : i + 1000].float().div_(255.0))
                        for i in range(0, len(val_images), 1000)
                    ]
                )
                .mean()
                .item()
            )
        if val_elbo >= target:
            break
    return {"epoch": epoch, "val_elbo": val_elbo, "reached": val_elbo >= target}


def vae_zoo_command(
    net: str, mnist_root: str, target: float, max_epochs: int, run_dir: Path, overrides: list[str]
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vae_zoo.train",
        "data=mnist",
        "data.binarize=dynamic",
        f"net={net}",
        f"data.root={mnist_root}",
        "data.download=false",
        f"trainer.max_epochs={max_epochs}",
        "test=false",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
        "+callbacks.reach_target._target_=lightning.pytorch.callbacks.EarlyStopping",
        "+callbacks.reach_target.monitor=val/elbo",
        "+callbacks.reach_target.mode=max",
        f"+callbacks.reach_target.stopping_threshold={target}",
        "+callbacks.reach_target.patience=1000000",
        *overrides,
    ]


def timed(command: list[str], env: dict, cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in MB, and the output of one process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{output[-3000:]}")
    return seconds, usage.ru_maxrss // 1024, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-root", required=True)
    parser.add_argument("--nets", nargs="+", default=["mlp", "conv"])
    parser.add_argument("--target", type=float, default=-100.0, help="validation ELBO to reach, nats per example")
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument(
        "--source", action="append", default=[], help="name=folder of another checkout to run the same way"
    )
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="more overrides for the vae_zoo runs, e.g. model.optimizer.lr=1e-3"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    mnist_root = str(Path(args.mnist_root).resolve())
    if args.worker:
        print(json.dumps(run_plain(args.nets[0], mnist_root, args.target, args.max_epochs)))
        return
    this_tree = Path(__file__).resolve().parents[1]
    sources = {
        "vae_zoo": this_tree,
        **{f"vae_zoo ({name})": Path(folder).resolve() for name, folder in (s.split("=", 1) for s in args.source)},
    }
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for net in args.nets:
            for label, source in sources.items():
                run_dir = Path(scratch) / f"{net}-{len(rows)}"
                env = {**os.environ, "PYTHONPATH": str(source)}
                seconds, rss, _ = timed(
                    vae_zoo_command(net, mnist_root, args.target, args.max_epochs, run_dir, args.overrides),
                    env,
                    Path(scratch),
                )
                with open(run_dir / "csv" / "metrics.csv", newline="") as f:
                    epochs = [row for row in csv.DictReader(f) if row.get("val/elbo")]
                elbo = float(epochs[-1]["val/elbo"])
                rows.append((net, label, seconds, len(epochs), elbo, elbo >= args.target, rss))
                print(rows[-1], flush=True)
            if not args.skip_plain:
                command = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    "--nets",
                    net,
                    "--mnist-root",
                    mnist_root,
                    "--target",
                    str(args.target),
                    "--max-epochs",
                    str(args.max_epochs),
                ]
                seconds, rss, output = timed(command, {**os.environ, "PYTHONPATH": str(this_tree)}, Path(scratch))
                result = json.loads(output.strip().splitlines()[-1])
                rows.append(
                    (
                        net,
                        "plain (Adam 1e-3, constant KL)",
                        seconds,
                        result["epoch"] + 1,
                        result["val_elbo"],
                        result["reached"],
                        rss,
                    )
                )
                print(rows[-1], flush=True)

    from rich.console import Console
    from rich.table import Table

    load = os.getloadavg()
    table = Table(
        title=f"time to validation ELBO >= {args.target} nats (dynamically binarized MNIST); load average at the end {load[0]:.2f} / {load[1]:.2f}"
    )
    for column in ("net", "run", "seconds", "epochs", "val ELBO (nats)", "reached", "peak RSS (MB)"):
        table.add_column(column, justify="left" if column in ("net", "run") else "right")
    for net, label, seconds, epochs, elbo, reached, rss in rows:
        table.add_row(net, label, f"{seconds:.1f}", str(epochs), f"{elbo:.2f}", "yes" if reached else "no", str(rss))
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
