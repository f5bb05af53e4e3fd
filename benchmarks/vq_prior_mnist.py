"""The VQ-VAE as a generative model on real MNIST: uniform prior vs a learned prior over its codes.

    python benchmarks/vq_prior_mnist.py --root ../shared/data --vq-epochs 5 --prior-epochs 10 \
        --pictures docs/

Trains, with vae_zoo's own train and evaluate (the CLI's code paths):

1. a VQ-VAE (``model=vq_vae``, default net and codebook, K = 512, 7x7 codes) on dynamically
   binarized MNIST (55k train / 5k val; the test set binarized once with data.seed = 0);
2. the learned prior over its frozen codes (``model=vq_prior``, the default causal transformer);
3. a small MNIST classifier (``vae_zoo.metrics.fid.train_classifier_extractor``, 3 epochs on the
   grey training images), whose test accuracy is printed;

then reports the test-set ELBO with the uniform and with the learned prior (nats per example,
bits/dim, with standard errors over the 10,000 test images), the prior's NLL per code, and the
share of N decoded samples of each prior that the classifier labels with confidence >= 0.9
(with the binomial standard error), beside the same share for real test images. Writes the two
sample grids as PNGs into --pictures.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torchvision.utils import save_image

from vae_zoo.data import MNISTDataModule
from vae_zoo.evaluation.runner import evaluate
from vae_zoo.metrics.fid import train_classifier_extractor
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train
from vae_zoo.run.run_config import compose_run_config

CONFIDENCE = 0.9


def data_overrides(root: str) -> list[str]:
    return ["data=mnist", f"data.root={root}", "data.download=false", "data.binarize=dynamic"]


def train_stage(overrides: list[str], folder: Path) -> tuple[float, dict[str, float]]:
    cfg = compose_config([*overrides, "callbacks.progress_bar=null"], output_dir=folder)
    start = time.perf_counter()
    result = train(cfg)
    return time.perf_counter() - start, result.metrics


def mnist_batches(root: str, split: str, binarize: str | None = None):
    """One pass of model-ready MNIST batches of a split (grey values unless ``binarize``)."""
    datamodule = MNISTDataModule(root=root, download=False, binarize=binarize, batch_size=256, eval_batch_size=1000)
    datamodule.setup()
    images, labels = datamodule.splits[split]["image"], datamodule.splits[split]["label"]

    def batches():
        order = torch.randperm(len(images)) if split == "train" else torch.arange(len(images))
        for rows in order.split(256):
            yield {"image": images[rows].float() / 255, "label": labels[rows]}

    return batches


@torch.no_grad()
def confident_share(classifier: torch.nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """Share of ``images`` whose top softmax probability is >= CONFIDENCE, and its binomial standard error."""
    top = torch.cat([classifier.logits(chunk).softmax(dim=1).max(dim=1).values for chunk in images.split(500)])
    share = (top >= CONFIDENCE).double().mean().item()
    return share, math.sqrt(share * (1 - share) / len(images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder holding MNIST/raw/")
    parser.add_argument("--vq-epochs", type=int, default=5)
    parser.add_argument("--prior-epochs", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=1000, help="prior samples per prior, classified")
    parser.add_argument("--pictures", type=Path, default=None, help="folder for the two 8x8 sample grids")
    parser.add_argument("--work", type=Path, default=None, help="keep the two run folders here")
    parser.add_argument("--vq-run", type=Path, default=None, help="a trained VQ-VAE run folder: skip stage 1")
    args = parser.parse_args()
    torch.manual_seed(0)
    work = args.work or Path(tempfile.mkdtemp(prefix="vq_prior_"))
    vq_run, prior_run = args.vq_run or work / "vq_vae", work / "vq_prior"

    vq_seconds = float("nan")
    if args.vq_run is None:
        vq_seconds, _ = train_stage(
            ["model=vq_vae", *data_overrides(args.root), f"trainer.max_epochs={args.vq_epochs}"], vq_run
        )
    prior_seconds, _ = train_stage(
        [
            "model=vq_prior",
            f"model.first_stage.path={vq_run}",
            *data_overrides(args.root),
            f"trainer.max_epochs={args.prior_epochs}",
        ],
        prior_run,
    )
    cfg = compose_run_config(
        prior_run, ["evaluate.fid=false", "evaluate.disentanglement=false"], output_dir=prior_run / "evaluation"
    )
    report = evaluate(cfg).metrics

    start = time.perf_counter()
    classifier, accuracy = train_classifier_extractor(
        mnist_batches(args.root, "train"), mnist_batches(args.root, "test"), in_channels=1, num_classes=10, epochs=3
    )
    classifier_seconds = time.perf_counter() - start

    from vae_zoo.run.run_config import load_frozen_model

    two_stage = load_frozen_model(str(prior_run))
    vq_vae = two_stage.first_stage
    uniform = vq_vae.sample(args.num_samples, torch.Generator().manual_seed(1))
    start = time.perf_counter()
    learned = two_stage.sample(args.num_samples, torch.Generator().manual_seed(1))
    sampling_seconds = time.perf_counter() - start
    real = torch.cat([batch["image"] for batch in mnist_batches(args.root, "test")()])[: args.num_samples]
    shares = {
        name: confident_share(classifier, images)
        for name, images in (("uniform prior", uniform), ("learned prior", learned), ("real test images", real))
    }
    if args.pictures is not None:
        args.pictures.mkdir(parents=True, exist_ok=True)
        save_image(uniform[:64], args.pictures / "vq_vae_uniform_prior_samples.png", nrow=8, padding=1)
        save_image(learned[:64], args.pictures / "vq_vae_learned_prior_samples.png", nrow=8, padding=1)

    table = Table(title="VQ-VAE on dynamically binarized MNIST: uniform vs learned prior", header_style="bold")
    for column in ("figure", "uniform prior", "learned prior", "unit"):
        table.add_column(column, justify="left" if column == "figure" else "right")

    def value(name: str) -> str:
        entry = report[name]
        error = entry.get("standard_error")
        return f"{entry['value']:.2f}" + (f" ± {error:.2f}" if error is not None else "")

    n = report["elbo_learned_prior"]["num_examples"]
    table.add_row(f"test ELBO ({n} images)", value("elbo_uniform_prior"), value("elbo_learned_prior"), "nats/example")
    table.add_row(
        "test bits/dim",
        f"{report['elbo_uniform_prior_bits_per_dim']['value']:.4f}",
        f"{report['elbo_learned_prior_bits_per_dim']['value']:.4f}",
        "bits/dim",
    )
    table.add_row("NLL per code", f"{math.log(512):.3f}", value("code_nll"), "nats/code")
    table.add_row("ELBO gain (paired)", "", value("elbo_gain_over_uniform"), "nats/example")
    table.add_row(
        f"samples with confidence >= {CONFIDENCE} ({args.num_samples})",
        "{:.3f} ± {:.3f}".format(*shares["uniform prior"]),
        "{:.3f} ± {:.3f}".format(*shares["learned prior"]),
        "share",
    )
    console = Console()
    console.print(table)
    console.print(
        f"real test images with confidence >= {CONFIDENCE}: {shares['real test images'][0]:.3f}; classifier test "
        f"accuracy {accuracy:.4f} (3 epochs, {classifier_seconds:.0f} s). Wall time: VQ-VAE {vq_seconds:.0f} s "
        f"({args.vq_epochs} epochs), prior {prior_seconds:.0f} s ({args.prior_epochs} epochs), "
        f"{args.num_samples} learned-prior samples {sampling_seconds:.1f} s. Runs in {work}."
    )
    print(
        json.dumps(
            {
                "metrics": {name: entry["value"] for name, entry in report.items()},
                "confident_share": shares,
                "classifier_accuracy": accuracy,
                "seconds": {"vq_vae": vq_seconds, "prior": prior_seconds, "sampling": sampling_seconds},
            }
        )
    )


if __name__ == "__main__":
    main()
