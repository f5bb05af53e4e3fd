"""Attacks of a hostile pass (issue 30), each played against real run folders and commands.

Every test crafts what an attacker controls (a run folder's config.yaml, a checkpoint's fields,
a copied folder, a file in an image folder) and checks what the user is left with: no marker
file created by a payload, no folder deleted, the original run untouched, one line of error.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vae_zoo.config import compose_config
from vae_zoo.errors import ConfigError, UntrustedFileError, VaeZooError
from vae_zoo.evaluation import evaluate, write_samples
from vae_zoo.experiment import train
from vae_zoo.run_config import compose_run_config, load_frozen_model

from conftest import TINY_SPRITES, Payload, copy_run, make_vq_vae_run

EVALUATE_QUICKLY = ["evaluate.fid=false", "evaluate.num_importance_samples=2", "evaluate.disentanglement=false"]


# ------------------------------------------------ 1. the first-stage loader cannot widen trust
FIRST_STAGE_TRUST = {
    # how a crafted config.yaml hands the trusted loader more trust than the command line gave
    "by keyword": lambda parent: {"path": str(parent), "trusted_targets": ["torch.load"]},
    "positionally": lambda parent: {"_args_": [str(parent), ["torch.load"]]},
    "as a mapping": lambda parent: {"path": str(parent), "trusted_targets": {"torch.load": True}},
    "as a string": lambda parent: {"path": str(parent), "trusted_targets": "torch.load"},
}


@pytest.mark.parametrize("form", sorted(FIRST_STAGE_TRUST))
def test_a_run_file_cannot_widen_trust_through_the_first_stage_loader(trained_run, tmp_path, form):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"x": Payload(marker)}, evil)
    # the parent run builds torch.load(evil, weights_only=False) if it is handed the trust to
    parent = copy_run(trained_run, tmp_path / "parent")
    config = OmegaConf.load(parent / "config.yaml")
    config.model.kl_schedule = {"_target_": "torch.load", "f": str(evil), "weights_only": False}
    OmegaConf.save(config, parent / "config.yaml")
    # the run given to evaluate names only the loader, which is trusted by name
    child = copy_run(trained_run, tmp_path / "child")
    config = OmegaConf.load(child / "config.yaml")
    loader = {"_target_": "vae_zoo.run_config.load_frozen_model", **FIRST_STAGE_TRUST[form](parent)}
    config.model.kl_schedule = loader
    OmegaConf.save(config, child / "config.yaml")

    with pytest.raises(UntrustedFileError) as refused:
        evaluate(compose_run_config(child, EVALUATE_QUICKLY, output_dir=tmp_path / "eval"))
    assert "torch.load" in str(refused.value)
    assert not marker.exists()


# ---------------------------------------------------------- 4. first stages that name each other
def _second_stage_run(folder: Path, first_stage: Path) -> Path:
    """A vq_prior run folder (config.yaml and a checkpoint) whose first stage is ``first_stage``."""
    cfg = compose_config(["model=vq_prior", f"model.first_stage.path={first_stage}"], output_dir=folder)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    torch.save({"state_dict": {}}, folder / "checkpoints" / "last.ckpt")
    return folder


def test_first_stages_that_name_each_other_are_one_error_not_a_recursion(tmp_path):
    make_vq_vae_run(tmp_path / "vq")  # a sound first stage, then runs that loop
    itself = _second_stage_run(tmp_path / "itself", tmp_path / "vq")
    config = OmegaConf.load(itself / "config.yaml")
    config.model.first_stage.path = str(itself)
    OmegaConf.save(config, itself / "config.yaml")
    with pytest.raises(ConfigError, match="first stages form a cycle") as refused:
        load_frozen_model(str(itself))
    assert f"{itself} -> {itself}" in str(refused.value)

    a, b = _second_stage_run(tmp_path / "a", tmp_path / "vq"), _second_stage_run(tmp_path / "b", tmp_path / "vq")
    for run, other in ((a, b), (b, a)):
        config = OmegaConf.load(run / "config.yaml")
        config.model.first_stage.path = str(other)
        OmegaConf.save(config, run / "config.yaml")
    with pytest.raises(ConfigError, match="first stages form a cycle") as refused:
        evaluate(compose_run_config(a, EVALUATE_QUICKLY, output_dir=tmp_path / "eval"))
    assert f"{b} -> {a} -> {b}" in str(refused.value)


# ------------------------------------------------- 2. a checkpoint's state cannot delete folders
def _model_checkpoint_state(checkpoint: dict) -> dict:
    return next(state for key, state in checkpoint["callbacks"].items() if key.startswith("ModelCheckpoint"))


def test_a_checkpoint_naming_folders_outside_the_run_deletes_nothing(trained_run, tmp_path):
    run = tmp_path / "run"
    train(compose_config([*TINY_SPRITES, "trainer.max_epochs=1"], output_dir=run))
    victim = tmp_path / "victim"
    (victim / "inside").mkdir(parents=True)
    (victim / "inside" / "thesis.tex").write_text("precious")
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    state = _model_checkpoint_state(checkpoint)
    aimed = f"{run}/checkpoints/../../victim"  # Lightning would rm -r it when a better checkpoint replaces it
    state.update(
        best_model_path=aimed,
        kth_best_model_path=aimed,
        best_model_score=torch.tensor(-1e9),
        kth_value=torch.tensor(-1e9),
        best_k_models={aimed: torch.tensor(-1e9)},
        last_model_path=str(victim / "inside"),
    )
    torch.save(checkpoint, last)

    result = train(compose_config([*TINY_SPRITES, "trainer.max_epochs=2", "ckpt_path=last"], output_dir=run))
    assert (victim / "inside" / "thesis.tex").read_text() == "precious"
    assert result.metrics["val/elbo"] > -1e9
    best = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert best[-1].startswith("best-epoch001-")  # the new best is written as usual; nothing was removed for it
    assert _model_checkpoint_state(torch.load(last, weights_only=True))["best_model_path"].startswith(str(run))


def test_malformed_checkpoints_are_one_clear_error_never_a_traceback_or_nan_results(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    last = run / "checkpoints" / "last.ckpt"
    for best in (run / "checkpoints").glob("best-*.ckpt"):
        best.unlink()
    (run / "checkpoints" / "best-epoch009-elbo-1.00.ckpt").mkdir()  # a directory where a checkpoint should be
    good = torch.load(last, weights_only=True)
    cases = {
        "state_dict is a list": ({**good, "state_dict": list(good["state_dict"].values())}, "not a mapping"),
        "a weight that is not a tensor": (
            {**good, "state_dict": {**good["state_dict"], next(iter(good["state_dict"])): 3}},
            "is not a tensor",
        ),
        "NaN weights": (
            {
                **good,
                "state_dict": {
                    name: torch.full_like(t, float("nan")) if t.is_floating_point() else t
                    for name, t in good["state_dict"].items()
                },
            },
            "NaN or infinite",
        ),
    }
    for checkpoint, named in cases.values():
        torch.save(checkpoint, last)
        for entry in (
            lambda: evaluate(compose_run_config(run, EVALUATE_QUICKLY, output_dir=tmp_path / "eval")),
            lambda: write_samples(
                compose_run_config(run, ["num_samples=4"], output_dir=tmp_path / "s", config_name="sample")
            ),
            lambda: train(compose_config([*TINY_SPRITES, "trainer.max_epochs=2", "ckpt_path=last"], output_dir=run)),
        ):
            with pytest.raises(VaeZooError, match=named):
                entry()
    # on the command line: one line, exit 2, whatever the case
    result = subprocess.run(
        [sys.executable, "-m", "vae_zoo.evaluate", f"ckpt_path={run}", "evaluate.fid=false"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "NaN or infinite" in result.stderr and "Traceback" not in result.stderr
