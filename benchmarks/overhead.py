"""What the framework costs over a hand-written PyTorch loop on the same modules (issue 18).

    python benchmarks/overhead.py --mnist-root ../shared/data --rounds 5
    python benchmarks/overhead.py --mnist-root ../shared/data --rounds 5 --source before=/tmp/vae_zoo_before
    python benchmarks/overhead.py --mnist-root ../shared/data --rounds 3 --nets conv \\
        --variants plain "plain fused" "plain fused channels_last" "plain fused compile" vae_zoo "vae_zoo channels_last"

Every measurement is one fresh process that trains one epoch of real MNIST (55,000 training
images, grey values, batch 128, p(x|z) Bernoulli, the default KL warm-up in vae_zoo) on the
machine's torch threads, with denormal floats flushed in both loops:

- ``plain``: a plain loop over the very same encoder and decoder modules (taken from the model
  vae_zoo builds, so the same init), fed from the same uint8 tensor a batch at a time
  (``x = images[index].float() / 255``), ``torch.optim.Adam`` with torch's default
  implementation for the device (on the CPU: its per-tensor loop). Words after ``plain`` make it
  as fast as the hardware allows: ``fused`` (``Adam(fused=True)``), ``channels_last`` (conv nets),
  ``compile`` (``torch.compile`` of encoder and decoder), ``malloc`` (glibc keeps freed memory
  for the next step: :func:`vae_zoo.run.cpu.keep_freed_memory`, as a vae_zoo run does), ``cuda`` (on
  the GPU, the images held there: the fastest a GPU loop can be fed); ``model`` computes the loss with the
  vae_zoo model's own forward (``model.batch_terms(batch).loss``): vae_zoo without Lightning.
- ``vae_zoo``: ``vae_zoo.run.experiment.train`` on the config ``python -m vae_zoo.train data=mnist
  net=<net>`` composes (default callbacks: progress bar, checkpoints, the five pictures, the CSV
  logger; ``test=false``), for one epoch. Words after ``vae_zoo`` are config overrides
  (``channels_last``, ``compile``) in the same spelling. ``--source name=folder`` adds the
  ``vae_zoo`` variant of another checkout (put first on ``PYTHONPATH``), e.g. the commit before.

Two figures per process: the steady-state training rate, images/s over steps 21 to the end of
the epoch (per-step wall time between the ends of successive steps: everything a step costs,
data, logging, callbacks included), and the epoch's wall time, from the first training batch to
the end of the epoch (for vae_zoo including its validation pass over 5,000 images, the pictures
and the checkpoints; for the plain loop training only). Each round runs every variant once, in
an order rotated from round to round, and the table gives medians and ranges over rounds of
each figure and of its ratio to the ``plain`` run of the same round. Run it on an otherwise idle
machine; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

WARMUP_STEPS = 20
BATCH_SIZE = 128
#: config overrides both loops build their model with (``--overrides``), e.g. a tiny net
NET_OVERRIDES: list[str] = []


# ------------------------------------------------------------------------ one process
class StepClock(L.Callback):
    """Writes the wall time at the end of every training step and at the ends of the epoch to a
    JSON file (the vae_zoo side of the measurement)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_epoch_start(self, trainer, module):
        self.epoch_start = time.perf_counter()
        self.step_ends: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.step_ends.append(time.perf_counter())

    def on_train_end(self, trainer, module):
        self.path.write_text(json.dumps(summary(self.step_ends, self.epoch_start, time.perf_counter())))


def summary(step_ends: list[float], epoch_start: float, epoch_end: float) -> dict[str, float]:
    steady = step_ends[WARMUP_STEPS:]
    return {
        "img_per_s": BATCH_SIZE * (len(steady) - 1) / (steady[-1] - steady[0]),
        "epoch_s": epoch_end - epoch_start,
        "steps": len(step_ends),
    }


def vae_zoo_overrides(net: str, mnist_root: str, extra: list[str], out: Path) -> list[str]:
    flags = {"channels_last": "channels_last=true", "compile": "compile=true"}
    return [
        "data=mnist",
        f"net={net}",
        f"data.root={mnist_root}",
        "data.download=false",
        "trainer.max_epochs=1",
        "test=false",
        *NET_OVERRIDES,
        "+callbacks.step_clock._target_=__main__.StepClock",
        f"+callbacks.step_clock.path={out}",
        *(flags.get(word, word) for word in extra),
    ]


def run_vae_zoo(net: str, mnist_root: str, extra: list[str], out: Path) -> None:
    from vae_zoo.run.config import compose_config
    from vae_zoo.run.experiment import train

    with tempfile.TemporaryDirectory() as run_dir:
        train(compose_config(vae_zoo_overrides(net, mnist_root, extra, out), output_dir=run_dir))


def plain_negative_elbo(encoder, decoder, x):
    """The plain loop's loss, written out by hand: -ELBO with one reparameterised sample, a
    Bernoulli p(x|z) on the decoder's logits and the closed-form KL to N(0, I), nats per example."""
    import torch
    import torch.nn.functional as F

    mu, logvar = encoder(x).chunk(2, dim=1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    recon = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="sum") / len(x)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum() / len(x)
    return recon + kl


def run_plain(net: str, mnist_root: str, words: list[str], out: Path) -> None:
    import torch
    from hydra.utils import instantiate

    from vae_zoo.run.config import compose_config

    torch.set_flush_denormal(True)
    if "malloc" in words:
        from vae_zoo.run.cpu import keep_freed_memory

        assert keep_freed_memory()
    cfg = compose_config(
        ["data=mnist", f"net={net}", f"data.root={mnist_root}", "data.download=false", *NET_OVERRIDES],
        output_dir="unused",
    )
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    device = torch.device("cuda" if "cuda" in words else "cpu")
    images = datamodule.splits["train"]["image"].to(device)  # (55000, 1, 28, 28) uint8, the tensor vae_zoo feeds from
    model = instantiate(cfg.model).to(device)
    encoder, decoder = model.encoder, model.decoder
    memory_format = torch.channels_last if "channels_last" in words else torch.contiguous_format
    encoder, decoder = encoder.to(memory_format=memory_format), decoder.to(memory_format=memory_format)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True) if "fused" in words else torch.optim.Adam(params, lr=1e-3)
    if "compile" in words:
        encoder, decoder = torch.compile(encoder), torch.compile(decoder)
    order = torch.randperm(len(images), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step_ends, epoch_start = [], time.perf_counter()
    for start in range(0, len(order), BATCH_SIZE):
        x = images[order[start : start + BATCH_SIZE]].float().div_(255.0).contiguous(memory_format=memory_format)
        if "model" in words:  # the vae_zoo model's own forward (its ELBO terms, KL schedule) without Lightning
            loss = model.batch_terms({"image": x}).loss
        else:
            loss = plain_negative_elbo(encoder, decoder, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        step_ends.append(time.perf_counter())
    out.write_text(json.dumps(summary(step_ends, epoch_start, time.perf_counter())))


# ------------------------------------------------------------------------ the driver
def measure(source: Path, variant: str, net: str, mnist_root: str, scratch: Path) -> dict[str, float]:
    loop, *words = variant.split()
    out = scratch / "result.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(source), "VAE_ZOO_LOG_DIR": str(scratch)}
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        loop,
        "--nets",
        net,
        "--mnist-root",
        mnist_root,
        "--out",
        str(out),
        "--overrides",
        *NET_OVERRIDES,
        "--words",
        *words,
    ]
    result = subprocess.run(command, env=env, cwd=scratch, capture_output=True, text=True)
    if result.returncode != 0 or not out.is_file():
        raise SystemExit(f"{variant} ({net}, {source}) failed:\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}")
    return json.loads(out.read_text())


def spread(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):,.{digits}f} [{min(values):,.{digits}f}-{max(values):,.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-root", required=True, help="folder holding MNIST/raw (e.g. ../shared/data)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nets", nargs="+", default=["mlp", "conv"])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["plain", "vae_zoo"],
        help="'plain [fused] [channels_last] [compile]' or 'vae_zoo [override...]'",
    )
    parser.add_argument(
        "--source", action="append", default=[], help="name=folder of another checkout: adds its vae_zoo variant"
    )
    parser.add_argument("--baseline", default="plain", help="the variant every ratio is to (e.g. 'plain cuda')")
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        help="config overrides both loops build their model with, e.g. a tiny net whose step is nearly all "
        "fixed per-step cost: 'model.encoder.hidden=[8]' 'model.decoder.hidden=[8]' model.latent_dim=2",
    )
    parser.add_argument("--worker", choices=["plain", "vae_zoo"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--words", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    mnist_root = str(Path(args.mnist_root).resolve())
    NET_OVERRIDES[:] = args.overrides
    if args.worker:
        run = run_plain if args.worker == "plain" else run_vae_zoo
        run(args.nets[0], mnist_root, args.words, Path(args.out))
        return

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    this_tree = Path(__file__).resolve().parents[1]
    jobs = [(variant, this_tree, variant) for variant in args.variants]
    jobs += [
        (f"vae_zoo ({name})", Path(folder).resolve(), "vae_zoo")
        for name, folder in (s.split("=", 1) for s in args.source)
    ]
    if args.baseline not in args.variants:
        raise SystemExit(
            f"--variants must include {args.baseline!r}: every ratio is to that run of the same round (--baseline)."
        )
    from vae_zoo.run.config import compose_config

    for _label, source, variant in jobs:  # a misspelt override fails now, not after an hour of rounds
        if variant.startswith("vae_zoo") and source == this_tree:
            compose_config(
                vae_zoo_overrides(args.nets[0], mnist_root, variant.split()[1:], Path("unused")), output_dir="unused"
            )
    results = {(net, label): [] for net in args.nets for label, _, _ in jobs}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for net in args.nets:
                shift = round_ % len(jobs)
                for label, source, variant in jobs[shift:] + jobs[:shift]:
                    result = measure(source, variant, net, mnist_root, Path(scratch))
                    results[(net, label)].append(result)
                    print(
                        f"round {round_ + 1} {net:4s} {label:28s} {result['img_per_s']:8,.0f} img/s  epoch {result['epoch_s']:6.2f} s",
                        flush=True,
                    )
    load = os.getloadavg()
    table = Table(
        title=escape(
            f"median [range] over {args.rounds} rounds; load average at the end {load[0]:.2f} / {load[1]:.2f} (1 / 5 min)"
        )
    )
    for column in (
        "net",
        "variant",
        "img/s (steps 21+)",
        f"ratio to {args.baseline}",
        f"ms a step over {args.baseline}",
        "epoch s",
        f"epoch / {args.baseline} epoch",
    ):
        table.add_column(column, justify="left" if column in ("net", "variant") else "right")
    for net in args.nets:
        plain = results[(net, args.baseline)]
        for label, _, _ in jobs:
            runs = results[(net, label)]
            rate_ratio = [r["img_per_s"] / p["img_per_s"] for r, p in zip(runs, plain)]
            epoch_ratio = [r["epoch_s"] / p["epoch_s"] for r, p in zip(runs, plain)]
            step_ms_over = [1e3 * BATCH_SIZE * (1 / r["img_per_s"] - 1 / p["img_per_s"]) for r, p in zip(runs, plain)]
            table.add_row(
                net,
                escape(label),
                spread([r["img_per_s"] for r in runs]),
                spread(rate_ratio, 2),
                spread(step_ms_over, 2),
                spread([r["epoch_s"] for r in runs], 2),
                spread(epoch_ratio, 2),
            )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
