"""How fast the test NLL is estimated: importance sampling with k = 1000 on MNIST (issue 18).

    python benchmarks/evaluation_throughput.py --mnist-root ../shared/data
    python benchmarks/evaluation_throughput.py --mnist-root ../shared/data --nets conv --examples 500 --chunk-sizes 50 100 250

For each net, the model ``python -m vae_zoo.train data=mnist data.binarize=dynamic net=<net>``
builds is evaluated by :func:`vae_zoo.metrics.importance_sampled_log_likelihoods` (the function
``python -m vae_zoo.evaluate`` calls) on the first ``--examples`` test images, binarized once
with the data's fixed seed, in batches of ``data.eval_batch_size`` (1000, the evaluate default;
fewer when ``--examples`` is smaller), with k = ``--k`` samples decoded ``chunk`` at a time.
The weights are as initialised: the cost of a decode does not depend on them (denormal floats
are flushed, as a training run does). Printed: test examples per second, decodes per second,
and the projected time for the full 10,000-image test set.

``--layouts contiguous channels_last`` measures the model in each memory layout (contiguous: how
evaluate loaded a model before; channels_last: how it loads a run trained with
``channels_last: true``, the default, now), and ``--precisions 32 bf16`` the decoder in float32
and under bfloat16 autocast (``evaluate.nll_precision``); every variant from the same draws,
interleaved over ``--rounds`` rounds, with the difference of its estimate from the first
variant's: of the mean NLL and the largest per example, in nats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from rich.console import Console
from rich.table import Table

from vae_zoo.data.splits import SplitBatches
from vae_zoo.metrics import importance_sampled_log_likelihoods
from vae_zoo.run.config import compose_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-root", required=True)
    parser.add_argument("--nets", nargs="+", default=["mlp", "conv"])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[100])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layouts", nargs="+", default=["channels_last"], choices=["contiguous", "channels_last"])
    parser.add_argument(
        "--precisions", nargs="+", default=["32"], choices=["32", "bf16"], help="the decoder's (evaluate.nll_precision)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds over the layouts (the median is shown)"
    )
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    table = Table(
        title=f"IS-NLL, k = {args.k}, on the first {args.examples} MNIST test images; torch threads {torch.get_num_threads()}"
    )
    columns = ("net", "layout", "decoder", "chunk", "examples/s", "decodes/s", "full test set (10,000)", "vs the first")
    for column in columns:
        table.add_column(column, justify="left" if column in ("net", "layout", "decoder") else "right")
    variants = [(layout, precision) for layout in args.layouts for precision in args.precisions]
    for net in args.nets:
        cfg = compose_config(
            [
                "data=mnist",
                "data.binarize=dynamic",
                f"net={net}",
                f"data.root={Path(args.mnist_root).resolve()}",
                "data.download=false",
                f"data.eval_batch_size={min(1000, args.examples)}",
            ],
            output_dir="unused",
        )
        datamodule = instantiate(cfg.data)
        datamodule.setup()
        model = instantiate(cfg.model).eval().to(args.device)
        for chunk in args.chunk_sizes:
            seconds: dict[tuple[str, str], list[float]] = {variant: [] for variant in variants}
            estimates: dict[tuple[str, str], torch.Tensor] = {}
            for _ in range(args.rounds):
                for layout, precision in variants:
                    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                    model.to(memory_format=memory_format)
                    batches = SplitBatches(datamodule, "test", torch.device(args.device), max_examples=args.examples)()
                    start = time.perf_counter()
                    estimates[layout, precision] = importance_sampled_log_likelihoods(
                        model,
                        batches,
                        num_samples=args.k,
                        chunk_size=chunk,
                        generator=torch.Generator(args.device).manual_seed(0),
                        precision=precision,
                    )
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    seconds[layout, precision].append(time.perf_counter() - start)
                    assert len(estimates[layout, precision]) == args.examples
            first = estimates[variants[0]]
            for variant in variants:
                rate = args.examples / statistics.median(seconds[variant])
                difference = (estimates[variant] - first).double()
                table.add_row(
                    net,
                    *variant,
                    str(chunk),
                    f"{rate:,.1f}",
                    f"{rate * args.k:,.0f}",
                    f"{10_000 / rate / 60:.1f} min",
                    f"NLL {-difference.mean().item():+.4f}, max {difference.abs().max().item():.2e} nats",
                )
            nll, error = -first.double().mean().item(), first.double().std().item() / len(first) ** 0.5
            print(f"{net}, chunk {chunk}: NLL {nll:.3f} ± {error:.3f} nats (the first variant, {len(first)} examples)")
    Console(width=140).print(table)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
