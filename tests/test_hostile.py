"""Attacks of a hostile pass (issue 30), each played against real run folders and commands.

Every test crafts what an attacker controls (a run folder's config.yaml, a checkpoint's fields,
a copied folder, a file in an image folder) and checks what the user is left with: no marker
file created by a payload, no folder deleted, the original run untouched, one line of error.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vae_zoo.data.folder import ImageFolderDataModule, find_images
from vae_zoo.errors import ConfigError, RunFolderError, UntrustedFileError, VaeZooError
from vae_zoo.evaluation.runner import evaluate, write_samples
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train
from vae_zoo.run.run_config import compose_run_config, load_frozen_model
from vae_zoo.run.run_folder import RunFolderLock
from vae_zoo.support.checkpoint_files import load_checkpoint

from conftest import TINY_SPRITES, Payload, cli_command, copy_run, make_vq_vae_run, run_cli, run_command, snapshot
from data_fixtures import write_image_folder

STEPS_PER_EPOCH = 8  # TINY_DATA: 256 training images in batches of 32
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
    loader = {"_target_": "vae_zoo.run.run_config.load_frozen_model", **FIRST_STAGE_TRUST[form](parent)}
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
    result = run_command("vae_zoo.evaluate", [f"ckpt_path={run}", "evaluate.fid=false"], tmp_path)
    assert result.returncode == 2 and "NaN or infinite" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------- 3 and 5. a run folder continued by the command line
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """A run made on the command line with config group choices, and the command that made it."""
    cwd = tmp_path_factory.mktemp("cli")
    command = ["model=beta_vae", "data=sprites", *TINY_SPRITES, "trainer.max_epochs=1", f"hydra.run.dir={cwd / 'run'}"]
    result = run_cli(command, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "run", command


def test_continuing_a_copied_run_folder_writes_only_into_the_copy(cli_run, tmp_path):
    original, _ = cli_run
    before = snapshot(original)
    copy = copy_run(original, tmp_path / "copy")
    result = run_cli([f"hydra.run.dir={copy}", "ckpt_path=last", "trainer.max_epochs=2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(original) == before  # its checkpoints, history, config and train.log untouched
    assert load_checkpoint(copy / "checkpoints" / "last.ckpt")["global_step"] == 2 * STEPS_PER_EPOCH
    config = OmegaConf.load(copy / "config.yaml")
    assert config.paths.output_dir == str(copy) and config.callbacks.model_checkpoint.dirpath == str(
        copy / "checkpoints"
    )
    assert str(original) not in (copy / "config.yaml").read_text()
    assert [row["epoch"] for row in csv.DictReader(open(copy / "csv" / "metrics.csv")) if row.get("val/elbo")] == [
        "0",
        "1",
    ]
    assert sorted(p.name for p in (copy / "checkpoints").glob("best-*.ckpt"))[-1].startswith("best-epoch001-")


def test_a_killed_run_resumes_with_the_very_command_that_started_it(cli_run, tmp_path):
    _, command = cli_run
    run = tmp_path / "run"  # a SLURM script's one command, ckpt_path=last included: it starts and requeues the job
    command = [
        *(arg for arg in command if not arg.startswith(("hydra.run.dir=", "trainer.max_epochs="))),
        "trainer.max_epochs=3",
        f"hydra.run.dir={run}",
        "ckpt_path=last",
    ]
    first, env = cli_command(command, tmp_path)
    started = subprocess.Popen(first, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline and started.poll() is None:
        time.sleep(0.01)
    started.kill()  # the node died after the first epoch's checkpoint
    started.wait()
    assert last.is_file()
    requeued = run_cli(command, cwd=tmp_path)  # SLURM requeues the job: the identical command
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert load_checkpoint(last)["global_step"] == 3 * STEPS_PER_EPOCH
    assert OmegaConf.load(run / "config.yaml").model._target_ == "vae_zoo.models.BetaVAE"
    # the record keeps the run's own choices, so the same command is accepted again, and another refused
    assert OmegaConf.load(run / ".hydra" / "hydra.yaml").hydra.runtime.choices.model == "beta_vae"
    before = snapshot(run)
    refused = run_cli([*(a for a in command if a != "model=beta_vae"), "model=vae"], cwd=tmp_path)
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 2 and "picks model=vae" in message and "made with (model=beta_vae)" in message
    assert snapshot(run) == before


# ------------------------------------------------------------------------- the smaller holes
BAD_SETTINGS = {
    # override -> what the one line names
    "training.lr=-1": "model.optimizer.lr=-1 is not a learning rate",
    "training.lr=0": "model.optimizer.lr=0 is not a learning rate",
    "training.lr=abc": "model.optimizer.lr='abc' is not a learning rate",
    "trainer.max_epochs=abc": "trainer.max_epochs='abc' must be a whole number",
    "model=beta_vae model.beta=-1": "model.beta=-1",
    "model=beta_tcvae model.gamma=-0.5": "model.gamma=-0.5",
    "model=factor_vae model.discriminator_optimizer.lr=0": "model.discriminator_optimizer.lr=0",
}


@pytest.mark.parametrize("overrides", sorted(BAD_SETTINGS))
def test_settings_a_run_cannot_use_are_refused_before_anything_is_built(tmp_path, overrides):
    with pytest.raises(ConfigError, match=re.escape(BAD_SETTINGS[overrides])):
        train(compose_config([*TINY_SPRITES, *overrides.split()], output_dir=tmp_path / "run"))
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_a_bad_learning_rate_on_the_command_line_is_one_line(tmp_path):
    result = run_cli([*TINY_SPRITES, "training.lr=abc"], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: model.optimizer.lr='abc' is not a learning rate" in result.stderr


def test_a_fifo_in_an_image_folder_is_not_read(tmp_path):
    write_image_folder(tmp_path / "photos", per_class=4)
    os.mkfifo(tmp_path / "photos" / "dark" / "waiting.png")  # open() on it would block forever
    dm = ImageFolderDataModule(root=str(tmp_path / "photos"), image_size=16, val_fraction=0.25, test_fraction=0.25)
    found = {str(path) for path in find_images(tmp_path / "photos")}
    assert "dark/waiting.png" not in found and "dark/dark_0.JPG" in found
    done = threading.Event()
    threading.Thread(target=lambda: (dm.setup(), done.set()), daemon=True).start()
    assert done.wait(60), "reading the folder hung on the FIFO"
    assert sum(len(split["image"]) for split in dm.splits.values()) == 8


def test_nothing_is_built_or_read_before_the_folder_lock_is_taken(tmp_path):
    run = tmp_path / "run"
    empty_root = tmp_path / "no-data"
    empty_root.mkdir()
    with RunFolderLock(run):  # another process is training in this folder
        with pytest.raises(RunFolderError, match="in use by another vae_zoo process"):
            # the data files are missing: building first would have said that instead
            train(compose_config(["data=mnist", f"data.root={empty_root}", "data.download=false"], output_dir=run))
    assert sorted(p.name for p in run.iterdir()) == [".lock"]
