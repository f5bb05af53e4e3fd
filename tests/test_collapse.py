"""Posterior collapse is said at the epoch it happens, and a healthy run says nothing (issue 25)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train

from conftest import TINY_SPRITES

QUICK = [*TINY_SPRITES, "kl_schedule=constant", "test=false"]


def collapsed_flags(run: Path) -> list[float]:
    with open(run / "csv" / "metrics.csv") as f:
        return [
            float(row["val/posterior_collapsed"]) for row in csv.DictReader(f) if row.get("val/posterior_collapsed")
        ]


def test_a_forced_collapse_is_warned_at_its_epoch_with_the_remedies(tmp_path, caplog):
    # β = 300 on the KL from the first step: the optimum is the mean image, every unit switched off
    with caplog.at_level(logging.WARNING):
        result = train(
            compose_config(["model=beta_vae", "model.beta=300", *QUICK, "trainer.max_epochs=3"], output_dir=tmp_path)
        )
    warnings = [r.getMessage() for r in caplog.records if "Posterior collapse" in r.getMessage()]
    assert result.metrics["val/active_units"] == 0
    assert len(warnings) == 1 and "since epoch 0 (now epoch 1" in warnings[0]  # once, when it was confirmed
    for remedy in ("model.kl_schedule.warmup_steps=", "kl_schedule=free_bits", "model.optimizer.lr=", "model.beta"):
        assert remedy in warnings[0]
    assert collapsed_flags(tmp_path) == [0.0, 1.0, 1.0]  # in the logs, each validation


def test_a_healthy_run_and_a_run_still_warming_up_say_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        # enough steps (3 epochs of 2048 images) for the tiny VAE to use its latents
        learning = ["data.num_train=2048", "trainer.max_epochs=3", "model.optimizer.lr=3e-3"]
        healthy = train(compose_config(["model=vae", *QUICK, *learning], output_dir=tmp_path / "healthy"))
        warming = train(
            compose_config(
                [
                    "model=beta_vae",
                    "model.beta=300",
                    *QUICK,
                    "kl_schedule=warmup",
                    "model.kl_schedule.warmup_steps=10000",
                ],
                output_dir=tmp_path / "warming",
            )
        )
    assert healthy.metrics["val/active_units"] > 0 and healthy.metrics["val/kl"] > 0.1
    assert not [r for r in caplog.records if "Posterior collapse" in r.getMessage()]
    assert collapsed_flags(tmp_path / "healthy") == [0.0, 0.0, 0.0] and collapsed_flags(tmp_path / "warming") == [
        0.0,
        0.0,
    ]
    assert warming.metrics["val/elbo"] < 0
