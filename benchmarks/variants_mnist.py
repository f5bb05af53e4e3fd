"""Each variant after a fixed short budget on real MNIST: val ELBO, recon, KL, active units
(Gaussian variants) or codebook perplexity and dead codes (VQ-VAE), and wall time.

    python benchmarks/variants_mnist.py --root ../shared/data --epochs 3

Data: dynamically binarized MNIST (55k train / 5k val), default conv nets, batch 128, Adam 1e-3.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

from vae_zoo.metrics import active_units
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train

VARIANTS = ("vae", "beta_vae", "cvae", "vq_vae")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="folder holding MNIST/raw/")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()

    rows = []
    for variant in args.variants:
        with tempfile.TemporaryDirectory() as out:
            cfg = compose_config(
                [
                    f"model={variant}",
                    "data=mnist",
                    f"data.root={args.root}",
                    "data.download=false",
                    "data.binarize=dynamic",
                    f"trainer.max_epochs={args.epochs}",
                    "kl_schedule=constant",  # the settings its BENCHMARKS.md figures were measured with
                    "model.optimizer.lr=1e-3",
                    "test=false",
                    "callbacks.progress_bar=null",
                    "trainer.enable_model_summary=false",
                ],
                output_dir=out,
            )
            start = time.perf_counter()
            result = train(cfg)
            seconds = time.perf_counter() - start
            metrics, experiment = result.metrics, result.experiment
            row = {
                "model": variant,
                "epochs": args.epochs,
                "seconds": round(seconds, 1),
                "val/elbo": metrics["val/elbo"],
                "val/recon": metrics["val/recon"],
                "val/kl": metrics["val/kl"],
            }
            if experiment.model.capabilities.gaussian_posterior:
                dm, model = experiment.datamodule, experiment.model
                batches = (dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader())
                row["active_units"] = f"{active_units(model, batches)}/{model.latent_dim}"
            else:
                row["val/perplexity"] = metrics["val/perplexity"]
                row["val/dead_codes"] = metrics["val/dead_codes"]
            rows.append(row)
            print(json.dumps(row))

    table = Table(
        title=f"vae_zoo variants on MNIST (dynamic binarization), {args.epochs} epochs, torch threads {torch.get_num_threads()}"
    )
    columns = [
        "model",
        "seconds",
        "val/elbo",
        "val/recon",
        "val/kl",
        "active_units",
        "val/perplexity",
        "val/dead_codes",
    ]
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(f"{row[c]:.2f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns))
    Console().print(table)


if __name__ == "__main__":
    main()
