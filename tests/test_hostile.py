"""Attacks of a hostile pass (issue 30), each played against real run folders and commands.

Every test crafts what an attacker controls (a run folder's config.yaml, a checkpoint's fields,
a copied folder, a file in an image folder) and checks what the user is left with: no marker
file created by a payload, no folder deleted, the original run untouched, one line of error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vae_zoo.config import compose_config
from vae_zoo.errors import ConfigError, UntrustedFileError
from vae_zoo.evaluation import evaluate
from vae_zoo.run_config import compose_run_config, load_frozen_model

from conftest import Payload, copy_run, make_vq_vae_run

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
