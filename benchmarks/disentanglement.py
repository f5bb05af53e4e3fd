"""The disentanglement table: each objective at its paper's weight, several seeds, one budget.

    python benchmarks/disentanglement.py run --sprite-size 1 --image-size 32 --epochs 10 \
        --models vae beta_vae beta_tcvae factor_vae dip_vae --seeds 0 1 2 3 4 --out results.jsonl
    python benchmarks/disentanglement.py table results.jsonl

``run`` trains each (model, seed) with vae_zoo's own defaults for the data (learning rate, KL
warm-up with its free-bits floor, gradient clipping, batch size: conf/training/sprites.yaml) and
the objective's paper weight (β-VAE β = 4,
Higgins et al. 2017; β-TCVAE α = γ = 1, β = 6, Chen et al. 2018; FactorVAE γ = 6.4, Kim & Mnih
2018; DIP-VAE-I λ_od = 10, λ_d = 100, Kumar et al. 2018), then scores the posterior means of the
2000 held-out test sprites with MIG, the FactorVAE score (majority vote) and DCI (gradient-boosted
trees), as disentanglement_lib defines them. A run counts as collapsed when no latent unit is
active at the end (val/active_units = 0). One JSON line per run is appended to ``--out`` as it
finishes, so a long sweep can be split over processes (``taskset -c 0`` / ``-c 1``, ``--threads 1``)
and resumed: runs already in the file are skipped.

``table`` prints, per model, the median and [min, max] over seeds of each score (and MIG's mean
over seeds ± its standard error), the val ELBO and the number of collapsed seeds, as a Markdown
table; then each objective's MIG minus the VAE's of the same seed (a seed gives every objective the
same init and data order), mean ± standard error over seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vae_zoo.data.splits import SplitBatches
from vae_zoo.metrics import dci, factor_vae_score, latent_codes_and_factors, mutual_information_gap
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train

QUIET = ["callbacks.progress_bar=null", "test=false", "logger=csv"]
PAPER_WEIGHTS = {
    "vae": ["model=vae"],
    "beta_vae": ["model=beta_vae", "model.beta=4"],
    "beta_tcvae": ["model=beta_tcvae", "model.alpha=1", "model.beta=6", "model.gamma=1"],
    "factor_vae": ["model=factor_vae", "model.gamma=6.4"],
    "dip_vae": ["model=dip_vae", "model.dip_type=i", "model.lambda_od=10", "model.lambda_d=100"],
}
SCORES = ("mig", "factor_vae_score", "dci_disentanglement", "dci_completeness", "dci_informativeness", "val_elbo")


def run_one(model: str, seed: int, args: argparse.Namespace) -> dict:
    overrides = [
        *PAPER_WEIGHTS[model],
        f"seed={seed}",
        f"data.image_size={args.image_size}",
        f"data.sprite_size={args.sprite_size}",
        *([f"trainer.max_epochs={args.epochs}"] if args.epochs else []),
        *args.overrides,
        *QUIET,
    ]
    folder = Path(tempfile.mkdtemp(prefix=f"disentanglement_{model}_{seed}_"))
    start = time.perf_counter()
    result = train(compose_config(overrides, output_dir=folder))
    seconds = time.perf_counter() - start
    trained = result.experiment.model.eval()
    datamodule = result.experiment.datamodule
    datamodule.setup("test")
    codes, factors = latent_codes_and_factors(trained, SplitBatches(datamodule, "test", trained.device)())
    scores = dci(factors, codes, seed=seed)
    return {
        "model": model,
        "seed": seed,
        "sprite_size": args.sprite_size,
        "image_size": args.image_size,
        "epochs": int(result.experiment.trainer.current_epoch),
        "steps": int(result.experiment.trainer.global_step),
        "overrides": args.overrides,
        "mig": mutual_information_gap(factors, codes).mig,
        "factor_vae_score": factor_vae_score(factors, codes, seed=seed).eval_accuracy,
        "dci_disentanglement": scores.disentanglement,
        "dci_completeness": scores.completeness,
        "dci_informativeness": scores.informativeness_test,
        "val_elbo": float(result.metrics["val/elbo"]),
        "active_units": int(result.metrics["val/active_units"]),
        "collapsed": int(result.metrics["val/active_units"]) == 0,
        "train_seconds": round(seconds, 1),
        "test_examples": len(codes),
        "torch_threads": torch.get_num_threads(),
        "run": str(folder),
    }


def key(row: dict) -> tuple:
    return (row["model"], row["seed"], row["sprite_size"], row["image_size"], tuple(row.get("overrides", ())))


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    out = Path(args.out)
    done = {key(json.loads(line)) for line in out.read_text().splitlines()} if out.exists() else set()
    for model in args.models:
        for seed in args.seeds:
            wanted = (model, seed, args.sprite_size, args.image_size, tuple(args.overrides))
            if wanted in done:
                continue
            row = run_one(model, seed, args)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                json.dumps(
                    {
                        k: row[k]
                        for k in (
                            "model",
                            "seed",
                            "mig",
                            "factor_vae_score",
                            "val_elbo",
                            "active_units",
                            "train_seconds",
                        )
                    }
                ),
                flush=True,
            )


def mean_and_standard_error(values: list[float]) -> tuple[float, float]:
    """The mean over seeds and its standard error (the seeds' standard deviation / sqrt(n))."""
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return statistics.fmean(values), se


def setting_label(sprite: float, size: int, overrides: tuple[str, ...]) -> str:
    return f"size {sprite}, {size}px" + (f", {' '.join(overrides)}" if overrides else "")


def table(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for path in args.results for line in Path(path).read_text().splitlines() if line]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(
            (row["sprite_size"], row["image_size"], tuple(row.get("overrides", ())), row["model"]), []
        ).append(row)
    print(
        "| sprites | model | seeds | MIG | MIG mean ± se | FactorVAE score | DCI D | DCI C | DCI I | val ELBO | "
        "collapsed | s/run |"
    )
    print("|---|---|---:|---|---|---|---|---|---|---|---:|---:|")
    for (sprite, size, overrides, model), runs in groups.items():

        def spread(name: str, digits: int = 3, runs: list[dict] = runs) -> str:
            values = [r[name] for r in runs]
            return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"

        mig_mean, mig_se = mean_and_standard_error([r["mig"] for r in runs])
        print(
            f"| {setting_label(sprite, size, overrides)} | {model} | {len(runs)} | {spread('mig')} | "
            f"{mig_mean:.3f} ± {mig_se:.3f} | "
            f"{spread('factor_vae_score')} | "
            f"{spread('dci_disentanglement')} | {spread('dci_completeness')} | {spread('dci_informativeness')} | "
            f"{spread('val_elbo', 1)} | {sum(r['collapsed'] for r in runs)} of {len(runs)} | "
            f"{statistics.median(r['train_seconds'] for r in runs):.0f} |"
        )
    # A seed gives every objective the same init and data order, so differences by seed are paired.
    print("\nMIG minus the VAE's of the same seed (same sprites, the VAE without overrides), mean ± se over seeds:")
    for (sprite, size, overrides, model), runs in groups.items():
        vae = {r["seed"]: r["mig"] for r in groups.get((sprite, size, (), "vae"), [])}
        differences = [r["mig"] - vae[r["seed"]] for r in runs if r["seed"] in vae]
        if model == "vae" and not overrides or len(differences) < 2:
            continue
        mean, se = mean_and_standard_error(differences)
        print(f"- {setting_label(sprite, size, overrides)}, {model}: {mean:+.3f} ± {se:.3f} ({len(differences)} seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--models", nargs="+", default=list(PAPER_WEIGHTS), choices=list(PAPER_WEIGHTS))
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    r.add_argument("--sprite-size", type=float, default=1.0, help="1: dSprites' geometry; 2: vae_zoo's default")
    r.add_argument("--image-size", type=int, default=64)
    r.add_argument("--epochs", type=int, default=None, help="default: the data's own (conf/training/)")
    r.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    r.add_argument("--out", required=True)
    r.add_argument("overrides", nargs="*", help="further config overrides, e.g. model.optimizer.lr=1e-3")
    t = sub.add_parser("table")
    t.add_argument("results", nargs="+")
    args = parser.parse_args()
    run(args) if args.command == "run" else table(args)


if __name__ == "__main__":
    main()
