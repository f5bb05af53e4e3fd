"""The docs hold: the README's example variant is the file the docs ship and it trains; every
file a doc names exists."""

from __future__ import annotations

import csv
import re
import sys

import pytest

from vae_zoo.errors import UntrustedFileError
from vae_zoo.evaluation.runner import evaluate
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train
from vae_zoo.run.run_config import compose_run_config

from conftest import REPO, TINY_SPRITES

EXAMPLE = REPO / "docs" / "examples" / "mmd_vae.py"


def test_the_readme_shows_the_example_variant_file_as_it_is():
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert EXAMPLE.read_text() in blocks


def test_the_example_variant_trains_logs_its_term_and_gets_better(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    args = [*TINY_SPRITES, "model._target_=mmd_vae.MMDVAE", "+model.mmd_weight=100", "trainer.max_epochs=3"]
    result = train(compose_config(args, output_dir=tmp_path))
    assert type(result.experiment.model).__name__ == "MMDVAE" and "val/mmd" in result.metrics
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        elbo = [float(row["val/elbo"]) for row in csv.DictReader(f) if row.get("val/elbo")]
    assert len(elbo) == 3 and elbo[-1] > elbo[0] + 1.0  # nats per example: it learns
    # its docstring's evaluate: a class of one's own is built from the run's config once trusted
    keep = [
        f"metrics.{name}=null" for name in ("nll", "active_units", "codebook_usage", "fid", "disentanglement", "ood")
    ]
    with pytest.raises(UntrustedFileError, match="mmd_vae.MMDVAE"):
        evaluate(compose_run_config(tmp_path, keep, output_dir=tmp_path / "evaluation"))
    report = evaluate(
        compose_run_config(tmp_path, [*keep, "trusted_targets=[mmd_vae]"], output_dir=tmp_path / "evaluation")
    )
    assert report.context["model"] == "MMDVAE" and abs(report.values()["elbo"] - result.metrics["test/elbo"]) < 5.0
    sys.modules.pop("mmd_vae", None)


def test_every_file_the_docs_name_exists():
    named = set()
    for doc in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        named |= {
            (doc.name, path)
            for path in re.findall(
                r"`((?:vae_zoo|tests|conf|benchmarks|docs)/[\w/.-]+\.(?:py|yaml|md|sh))", doc.read_text()
            )
        }
    assert len(named) > 20
    missing = sorted((doc, path) for doc, path in named if not (REPO / path).exists() and "<" not in path)
    assert not missing, missing
