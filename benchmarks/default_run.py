"""Does the default run look like it learned? A measurable check of its pictures (issue 14).

    python benchmarks/default_run.py sprites                       # the default run, as `python -m vae_zoo.train` builds it
    python benchmarks/default_run.py sprites --overrides trainer.max_epochs=5 kl_schedule=constant   # another setting
    python benchmarks/default_run.py mnist --root ../shared/data   # a 1-epoch real-MNIST run: how many latent units stay active

``sprites`` trains the default run (the overrides given on top), then scores its pictures on the
2000 test sprites with a shape classifier that the script trains on the 16000 training sprites
(a small CNN with global pooling, so it sees shape, not position; trained with random blur so
that it also reads blurry images; its test accuracy on the sharp and on blurred test images is
printed):

- ``recon_shape_acc``: the share of test reconstructions (the mean of p(x|z) at the posterior
  mean) that the classifier labels with the input's shape. A VAE that draws every sprite as a
  disc scores about 1/3 (chance) however sharp its discs are.
- ``prior_nonempty``: the share of 1000 prior samples (z ~ N(0, I), mean images) with at least
  half as many pixels above 0.5 as the smallest training sprite has: a sample that shows
  something, rather than a black square or a faint speck.
- ``prior_confident``: the share of those prior samples that the classifier labels with
  confidence >= 0.9 and that are non-empty: samples that look like one of the three shapes.
- ``mig``: the mutual information gap (Chen et al. 2018) of the posterior means on the test set
  (do traversals move one factor each), and ``active_units``.

``mnist`` trains ``data=mnist`` with the defaults for one epoch (``--batches N``: only the first
N batches, as a quick try does) and prints the active units out of the latent size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from vae_zoo.data.splits import SplitBatches
from vae_zoo.data.sprites import make_sprites
from vae_zoo.metrics import latent_codes_and_factors, mutual_information_gap
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train

QUIET = ["callbacks.progress_bar=null", "trainer.enable_model_summary=false"]


def shape_classifier(
    image_size: int, sprite_size: float, cache: Path, seed: int = 1
) -> tuple[nn.Module, dict[str, float]]:
    """A CNN that names a sprite's shape, trained on freshly drawn sprites (another seed than the
    default data's, so it has never seen the test images); kept in ``cache`` (about a minute to
    train on 2 cores)."""
    cached = cache / f"sprite_shape_classifier_{image_size}px_size{sprite_size}_seed{seed}.pt"
    torch.manual_seed(seed)
    images, classes = make_sprites(18000, seed=1000 + seed, image_size=image_size, sprite_size=sprite_size)
    x = images.float() / 255.0
    y = classes[:, 0].long()
    train_x, train_y, test_x, test_y = x[:16000], y[:16000], x[16000:], y[16000:]
    net = nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 3),
    )
    epochs = 12
    if cached.is_file():
        saved = torch.load(cached, weights_only=True)
        net.load_state_dict(saved["state_dict"])
        return net.eval(), saved["stats"]
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * 125)
    for _epoch in range(epochs):
        order = torch.randperm(len(train_x))
        for start in range(0, len(order), 128):
            index = order[start : start + 128]
            batch = train_x[index]
            if torch.rand(()) < 0.5:  # blurred like a VAE's mean image, so it reads those too
                batch = gaussian_blur(batch, kernel_size=5, sigma=float(torch.empty(()).uniform_(0.5, 1.5)))
            loss = F.cross_entropy(net(batch), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        sharp = (net(test_x).argmax(1) == test_y).float().mean().item()
        blurred = (net(gaussian_blur(test_x, kernel_size=5, sigma=1.0)).argmax(1) == test_y).float().mean().item()
    smallest = (images > 127).flatten(1).sum(1).min().item()
    stats = {
        "classifier_test_acc": round(sharp, 4),
        "classifier_blurred_acc": round(blurred, 4),
        "smallest_sprite_pixels": smallest,
    }
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "stats": stats}, cached)
    return net, stats


@torch.no_grad()
def picture_scores(model, datamodule, classifier: nn.Module, smallest_sprite: int) -> dict[str, float]:
    model.eval()
    batches = SplitBatches(datamodule, "test", model.device)
    hits = total = 0
    for batch in batches():
        reconstruction = model.reconstruct(batch["image"], model.condition(batch)).cpu()
        hits += (classifier(reconstruction).argmax(1) == batch["factors"][:, 0].long().cpu()).sum().item()
        total += len(reconstruction)
    samples = model.sample(1000, torch.Generator().manual_seed(0)).cpu()
    nonempty = (samples > 0.5).flatten(1).sum(1) >= smallest_sprite / 2
    confident = classifier(samples).softmax(1).max(1).values >= 0.9
    codes, factors = latent_codes_and_factors(model, batches())
    return {
        "recon_shape_acc": round(hits / total, 4),
        "recon_examples": total,
        "prior_nonempty": round(nonempty.float().mean().item(), 4),
        "prior_confident": round((nonempty & confident).float().mean().item(), 4),
        "mig": round(mutual_information_gap(factors, codes).mig, 4),
    }


def sprites(args: argparse.Namespace) -> dict:
    run = Path(tempfile.mkdtemp(prefix="default_run_"))
    cfg = compose_config([*QUIET, "test=false", *args.overrides], output_dir=run)
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    classifier, classifier_stats = shape_classifier(cfg.data.image_size, cfg.data.sprite_size, Path(args.cache))
    experiment = result.experiment
    experiment.datamodule.setup("test")
    scores = picture_scores(
        experiment.model, experiment.datamodule, classifier, classifier_stats["smallest_sprite_pixels"]
    )
    return {
        "overrides": args.overrides,
        "train_s": round(seconds, 1),
        "val_elbo": round(result.metrics["val/elbo"], 2),
        "active_units": result.metrics.get("val/active_units"),
        **scores,
        **classifier_stats,
        "run": str(run),
    }


def mnist(args: argparse.Namespace) -> dict:
    run = Path(tempfile.mkdtemp(prefix="default_mnist_"))
    overrides = [
        *QUIET,
        "test=false",
        "data=mnist",
        f"data.root={args.root}",
        "data.download=false",
        "trainer.max_epochs=1",
    ]
    if args.batches:
        overrides.append(f"trainer.limit_train_batches={args.batches}")
    cfg = compose_config([*overrides, *args.overrides], output_dir=run)
    start = time.perf_counter()
    result = train(cfg)
    return {
        "overrides": args.overrides,
        "batches": args.batches or "all",
        "train_s": round(time.perf_counter() - start, 1),
        "val_elbo": round(result.metrics["val/elbo"], 2),
        "active_units": result.metrics.get("val/active_units"),
        "latent_dim": cfg.model.latent_dim,
        "run": str(run),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="study", required=True)
    spr = sub.add_parser("sprites")
    spr.add_argument("--overrides", nargs="*", default=[])
    spr.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "vae_zoo_benchmarks"),
        help="where the shape classifier is kept",
    )
    mn = sub.add_parser("mnist")
    mn.add_argument("--root", required=True, help="folder holding MNIST/raw/")
    mn.add_argument("--batches", type=int, default=0, help="train on the first N batches only (0: the whole epoch)")
    mn.add_argument("--overrides", nargs="*", default=[])
    args = parser.parse_args()
    row = sprites(args) if args.study == "sprites" else mnist(args)
    print(json.dumps({"torch_threads": torch.get_num_threads(), **row}), flush=True)


if __name__ == "__main__":
    main()
