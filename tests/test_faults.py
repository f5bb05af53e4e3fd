"""Nothing a user made is lost, and nothing a user loads runs code.

Each test plays a hostile user or a failing machine against real runs (the CLI in a
subprocess where signals, exit statuses or Hydra's own file writes matter) and checks what the
user is left with: the run folder's files, its metrics history, its checkpoints.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vae_zoo.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    Preempted,
    RunFolderError,
    UntrustedFileError,
)
from vae_zoo.evaluation.runner import evaluate, write_samples
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import build, print_summary, train
from vae_zoo.run.run_config import compose_run_config
from vae_zoo.run.run_folder import atomic_write
from vae_zoo.support.checkpoint_files import load_checkpoint

from conftest import TINY_SPRITES, Payload, copy_run, run_cli, run_command, snapshot

TESTS = Path(__file__).resolve().parent
STEPS_PER_EPOCH = 8  # TINY_DATA: 256 training images in batches of 32
LOGGED_EVERY_STEP = ["trainer.log_every_n_steps=1", "test=false"]


# ------------------------------------------------------------------------------ helpers
def metrics_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def training_steps(run: Path) -> list[int]:
    return [int(row["step"]) for row in metrics_rows(run) if row.get("train/loss")]


def validation_epochs(run: Path) -> list[int]:
    return [int(row["epoch"]) for row in metrics_rows(run) if row.get("val/elbo")]


def start_train(args: list[str], cwd: Path) -> subprocess.Popen:
    """``python -m vae_zoo.train`` in the background, as a scheduler would start it."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "vae_zoo.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, timeout: float = 120.0, poll: float = 0.01) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise TimeoutError("the run never got there")
        time.sleep(poll)


def holds_lock(run: Path) -> bool:
    lock = run / ".lock"
    return lock.is_file() and lock.stat().st_size > 0


# ------------------------------------------------------------------ loading runs no code
def test_a_checkpoint_whose_pickle_runs_code_is_refused_everywhere(trained_run, tmp_path, monkeypatch):
    run = copy_run(trained_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["wandb_run_id"] = Payload(marker)  # what `train logger=wandb ckpt_path=...` reads first
    torch.save(checkpoint, last)
    for best in (run / "checkpoints").glob("best-*.ckpt"):
        best.unlink()

    with pytest.raises(UntrustedFileError, match="posix.system"):
        load_checkpoint(last)
    with pytest.raises(UntrustedFileError, match="posix.system"):
        evaluate(
            compose_run_config(
                last, ["evaluate.fid=false", "evaluate.num_importance_samples=2"], output_dir=tmp_path / "eval"
            )
        )
    with pytest.raises(UntrustedFileError, match="posix.system"):
        write_samples(
            compose_run_config(last, ["num_samples=4"], output_dir=tmp_path / "samples", config_name="sample")
        )
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(UntrustedFileError, match="posix.system"):
        train(compose_config([*TINY_SPRITES, "logger=wandb", f"ckpt_path={last}"], output_dir=tmp_path / "resumed"))
    assert not marker.exists()

    # what the user sees on the command line: one line, no traceback, nothing run
    result = run_command("vae_zoo.evaluate", [f"ckpt_path={last}", "evaluate.fid=false"], tmp_path)
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "error:" in message and "posix.system" in message and "would run code" in message
    assert "Traceback" not in result.stderr
    assert not marker.exists()


UNTRUSTED = {
    # key in config.yaml -> node: a direct call, a trusted module's re-export, a method
    "data.corruption": {"_target_": "torch.load", "f": "{evil}", "weights_only": False},
    "model.likelihood": {"_target_": "vae_zoo.run.experiment.torch.load", "f": "{evil}", "weights_only": False},
    "model.kl_schedule": {"_target_": "subprocess.run", "args": ["touch", "{marker}"]},
}


@pytest.mark.parametrize("key", sorted(UNTRUSTED))
def test_a_run_config_naming_an_untrusted_target_is_refused(trained_run, tmp_path, key):
    run = copy_run(trained_run, tmp_path / "run")
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"x": Payload(marker)}, evil)
    config = OmegaConf.load(run / "config.yaml")
    node = OmegaConf.to_container(OmegaConf.create(UNTRUSTED[key]))
    node = {
        k: (v.format(evil=evil, marker=marker) if isinstance(v, str) and k != "_target_" else v)
        for k, v in node.items()
    }
    if "args" in node:
        node["args"] = [a.format(marker=marker) for a in node["args"]]
    OmegaConf.update(config, key, node, merge=False, force_add=True)
    OmegaConf.save(config, run / "config.yaml")
    for entry in (
        lambda: evaluate(compose_run_config(run, ["evaluate.fid=false"], output_dir=tmp_path / "eval")),
        lambda: write_samples(compose_run_config(run, [], output_dir=tmp_path / "samples", config_name="sample")),
    ):
        with pytest.raises(UntrustedFileError) as refused:
            entry()
        message = str(refused.value)
        assert f"{key}._target_={UNTRUSTED[key]['_target_']}" in message and "trusted_targets=[" in message
    assert not marker.exists()
    # a run's own config.yaml cannot widen the trusted set: conf/evaluate.yaml composes after it
    OmegaConf.update(config, "trusted_targets", [UNTRUSTED[key]["_target_"]], force_add=True)
    OmegaConf.save(config, run / "config.yaml")
    with pytest.raises(UntrustedFileError):
        evaluate(compose_run_config(run, ["evaluate.fid=false"], output_dir=tmp_path / "eval"))
    assert not marker.exists()


HOSTILE_FOLDERS = {
    # what a crafted run folder adds -> what the refusal names
    "hydra callbacks": (
        {"hydra": {"callbacks": {"x": {"_target_": "torch.load", "f": "{evil}", "weights_only": False}}}},
        "top-level 'hydra' node",
    ),
    "a hidden target": (
        {"payload": "{{_target_: torch.load, f: {evil}, weights_only: false}}", "extra": "${{oc.create:${{payload}}}}"},
        "the interpolation",
    ),
    "a secret copied": ({"note": "${{oc.env:HOME}}"}, "the interpolation note="),
    "inception weights": ({"feature_extractor": {"weights_path": "{evil}"}, "data": {"channels": 1}}, "posix.system"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FOLDERS))
def test_a_run_folder_that_would_act_before_or_around_the_check_is_refused(trained_run, tmp_path, case):
    run = copy_run(trained_run, tmp_path / "run")
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"x": Payload(marker)}, evil)
    addition, named = HOSTILE_FOLDERS[case]
    text = OmegaConf.to_yaml(OmegaConf.create(addition)) if "{{" not in str(addition) else None
    config = (run / "config.yaml").read_text()
    if text is None:  # values with literal interpolations: write them as YAML text
        text = "".join(f"{key}: '{value.format(evil=evil)}'\n" for key, value in addition.items())
    else:
        text = text.replace("'{evil}'", str(evil)).replace("{evil}", str(evil))
    if case == "inception weights":  # merged into the existing nodes
        merged = OmegaConf.merge(OmegaConf.create(config), OmegaConf.create(text))
        (run / "config.yaml").write_text(OmegaConf.to_yaml(merged))
    else:
        (run / "config.yaml").write_text(config + text)
    result = run_command(
        "vae_zoo.evaluate",
        [
            f"ckpt_path={run}",
            "evaluate.num_importance_samples=2",
            "evaluate.fid=true" if case == "inception weights" else "evaluate.fid=false",
        ],
        tmp_path,
    )
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and named in message, message[-2000:]
    assert not marker.exists() and "Traceback" not in result.stderr


BAD_ARGUMENTS = {
    # key in config.yaml -> the trusted class it builds and an argument that class does not take
    "model": "not_an_argument",
    "callbacks.model_checkpoint": "bogus_option",
    "trainer.profiler": "no_such_setting",
    "logger.csv": "unknown",
}


@pytest.mark.parametrize("key", sorted(BAD_ARGUMENTS))
def test_a_run_config_giving_a_trusted_class_arguments_it_does_not_take_names_file_key_and_argument(
    trained_run, tmp_path, key
):
    run = copy_run(trained_run, tmp_path / "run")
    config = OmegaConf.load(run / "config.yaml")
    if key == "trainer.profiler":
        OmegaConf.update(config, key, {"_target_": "lightning.pytorch.profilers.SimpleProfiler"}, force_add=True)
    OmegaConf.update(config, f"{key}.{BAD_ARGUMENTS[key]}", 1, force_add=True)
    OmegaConf.save(config, run / "config.yaml")
    continued = OmegaConf.merge(
        config, {"continued_run": str(run)}
    )  # what `train hydra.run.dir=<run> ckpt_path=last` builds
    checks = [lambda: build(continued)]
    if key == "model":  # what evaluate and sample build from a run
        checks.append(lambda: evaluate(compose_run_config(run, ["evaluate.fid=false"], output_dir=tmp_path / "eval")))
    for check in checks:
        with pytest.raises(ConfigError) as refused:
            check()
        message = str(refused.value)
        assert str(run / "config.yaml") in message and f"{key} builds" in message and BAD_ARGUMENTS[key] in message
        assert "\n" not in message


def test_a_run_config_with_a_yaml_python_tag_is_one_line_naming_the_file_and_line(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    text = (
        (run / "config.yaml")
        .read_text()
        .replace("seed: 0\n", f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    )
    (run / "config.yaml").write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "!!python" in row)
    for module in ("vae_zoo.evaluate", "vae_zoo.sample"):
        result = run_command(module, [f"ckpt_path={run}"], tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        (message,) = [row for row in result.stderr.splitlines() if row.strip()]
        assert str(run / "config.yaml") in message and f"line {line}" in message and "python/object" in message
    assert not marker.exists()


def test_a_symbolic_link_where_evaluate_writes_is_refused(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / "evaluation").mkdir()
    (run / "evaluation" / "metrics.json").symlink_to(victim)
    with pytest.raises(UntrustedFileError, match="symbolic link"):
        compose_run_config(run, ["evaluate.fid=false"], output_dir=run / "evaluation")
    assert victim.read_text() == "precious"


def test_the_user_can_trust_a_target_of_their_own(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    config = OmegaConf.load(run / "config.yaml")
    config.model.kl_schedule = {"_target_": "vae_zoo_user_schedules.Constant"}
    OmegaConf.save(config, run / "config.yaml")
    overrides = ["evaluate.fid=false", "evaluate.num_importance_samples=2", "evaluate.disentanglement=false"]
    with pytest.raises(UntrustedFileError, match="vae_zoo_user_schedules.Constant"):
        evaluate(compose_run_config(run, overrides, output_dir=tmp_path / "eval"))
    package = tmp_path / "user"
    package.mkdir()
    (package / "vae_zoo_user_schedules.py").write_text(
        "from vae_zoo.blocks.schedules import KLSchedule\n\nclass Constant(KLSchedule):\n    pass\n"
    )
    sys.path.insert(0, str(package))
    try:
        report = evaluate(
            compose_run_config(
                run, [*overrides, "trusted_targets=[vae_zoo_user_schedules]"], output_dir=tmp_path / "eval"
            )
        )
    finally:
        sys.path.remove(str(package))
    assert report.metrics["elbo"]["value"] < 0


# ------------------------------------------------------------------ resume keeps everything
@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_loses_nothing(tmp_path):
    """Four kill -9s (two at random moments, two in the middle of writing a checkpoint), each
    followed by the SLURM requeue command (same folder, ckpt_path=last), then a run to the end."""
    epochs = 5
    run = tmp_path / "run"
    args = [
        *TINY_SPRITES,
        *LOGGED_EVERY_STEP,
        f"trainer.max_epochs={epochs}",
        f"hydra.run.dir={run}",
        "ckpt_path=last",
        "trainer.plugins=[{_target_: fault_injection.SlowCheckpointIO}]",
        "trusted_targets=[fault_injection]",
    ]
    chance = random.Random(0)
    for kill in ("random", "mid-save", "random", "mid-save"):
        process = start_train(args, tmp_path)
        wait_for(lambda: holds_lock(run) or process.poll() is not None)  # noqa: B023 (called at once, in this iteration)
        if kill == "random":
            time.sleep(chance.uniform(0.5, 4.0))
        else:
            wait_for(lambda: any((run / "checkpoints").glob(".*.tmp-*")) or process.poll() is not None, poll=0.002)  # noqa: B023
            time.sleep(chance.uniform(0.0, 0.2))
        assert process.poll() is None, process.communicate()[0][-3000:]  # it was still running when killed
        process.send_signal(signal.SIGKILL)
        process.wait()
        for checkpoint in (run / "checkpoints").glob("*.ckpt"):  # every checkpoint left loads
            assert load_checkpoint(checkpoint)["global_step"] > 0
    leftovers = list((run / "checkpoints").glob(".*.tmp-*"))
    assert leftovers  # a kill did land in the middle of a save
    process = start_train(args, tmp_path)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert not any((run / "checkpoints").glob(".*.tmp-*")) and all(not p.exists() for p in leftovers)
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == epochs * STEPS_PER_EPOCH
    assert sorted(p.name for p in (run / "checkpoints").glob("last*.ckpt")) == ["last.ckpt"]
    assert training_steps(run) == list(range(epochs * STEPS_PER_EPOCH))  # every step once, in order
    assert validation_epochs(run) == list(range(epochs))
    assert (run / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file()


@pytest.mark.slow
def test_sigterm_resume_sigterm_resume_restores_the_newest_step_and_a_second_process_is_refused(tmp_path):
    run = tmp_path / "run"
    args = [*TINY_SPRITES, *LOGGED_EVERY_STEP, "trainer.max_epochs=1000", f"hydra.run.dir={run}", "ckpt_path=last"]
    saved_steps = []
    for segment in range(2):
        process = start_train(args, tmp_path)
        previous = load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] if saved_steps else -1

        def saved_a_newer_checkpoint(previous=previous, process=process) -> bool:
            last = run / "checkpoints" / "last.ckpt"
            return last.is_file() and load_checkpoint(last)["global_step"] > previous or process.poll() is not None

        wait_for(saved_a_newer_checkpoint, poll=0.2)
        if segment == 0:  # a second process on the same folder while the first trains
            before = snapshot(run / "checkpoints")
            second = run_cli([*TINY_SPRITES, f"hydra.run.dir={run}", "ckpt_path=last"], cwd=tmp_path)
            message = " ".join(second.stderr.split())
            assert second.returncode == 2 and f"in use by another vae_zoo process (pid {process.pid}" in message, (
                message
            )
            assert "Traceback" not in second.stderr
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 128 + signal.SIGTERM, output[-3000:]  # "requeue me", not success
        assert "preempted:" in output and "ckpt_path=last" in output
        step = load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
        assert step > (saved_steps[-1] if saved_steps else 0)
        if saved_steps:
            assert f"Resuming from step {saved_steps[-1]}" in output  # the newest step, not an older one
        saved_steps.append(step)
        if segment == 0:
            assert snapshot(run / "checkpoints") != before  # the first process kept on working
    finish = saved_steps[-1] // STEPS_PER_EPOCH + 2
    result = run_cli(
        [*TINY_SPRITES, *LOGGED_EVERY_STEP, f"trainer.max_epochs={finish}", f"hydra.run.dir={run}", "ckpt_path=last"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming from step {saved_steps[-1]}" in result.stderr + result.stdout
    assert training_steps(run) == list(range(finish * STEPS_PER_EPOCH))
    assert validation_epochs(run) == list(range(finish))
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt") if not p.name.startswith("best-")) == [
        "last.ckpt"
    ]


def test_sigusr1_saves_the_step_it_stopped_at_and_asks_to_be_requeued(tmp_path):
    overrides = [
        *TINY_SPRITES,
        *LOGGED_EVERY_STEP,
        "trainer.max_epochs=3",
        "+callbacks.usr1={_target_: fault_injection.SignalAtStep, step: 11}",
    ]
    with pytest.raises(Preempted) as stopped:
        train(compose_config(overrides, output_dir=tmp_path))
    assert stopped.value.exit_code == 128 + signal.SIGUSR1 and stopped.value.step == 12  # after step 11 ran
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 12
    train(compose_config([*overrides[:-1], "ckpt_path=last"], output_dir=tmp_path))
    assert training_steps(tmp_path) == list(range(3 * STEPS_PER_EPOCH))


@pytest.mark.slow
def test_a_resume_with_a_mismatched_config_leaves_the_run_folder_byte_identical(tmp_path):
    run = tmp_path / "run"
    result = run_cli([*TINY_SPRITES, "trainer.max_epochs=1", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    before = snapshot(run)
    assert {"config.yaml", ".hydra/config.yaml", "csv/metrics.csv", "checkpoints/last.ckpt"} <= set(before)
    result = run_cli(
        [*TINY_SPRITES, "trainer.max_epochs=2", "model.latent_dim=6", f"hydra.run.dir={run}", "ckpt_path=last"],
        cwd=tmp_path,
    )
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr[-3000:]
    assert (
        "does not fit the model" in message
        and "model.latent_dim: 4 -> 6" in message
        and "(8, 32) in the checkpoint" in message
    )
    assert snapshot(run) == before


@pytest.mark.slow
def test_continuing_a_run_folder_uses_its_own_config_and_refuses_what_would_be_ignored(tmp_path):
    run = tmp_path / "run"
    first = run_cli(
        [*TINY_SPRITES, "model.latent_dim=6", "kl_schedule=warmup", "trainer.max_epochs=1", f"hydra.run.dir={run}"],
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    # the SLURM requeue command with none of the original overrides: the run's own config is used
    result = run_cli([f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_epochs=2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    config = OmegaConf.load(run / "config.yaml")
    assert config.model.latent_dim == 6 and config.model.kl_schedule.warmup_steps and config.data.num_train == 256
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2 * STEPS_PER_EPOCH
    before = snapshot(run)
    refused = run_cli([f"hydra.run.dir={run}", "ckpt_path=last", "model=beta_vae"], cwd=tmp_path)
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 2 and "uses its own config.yaml" in message and "picks model" in message
    marker = tmp_path / "pwned"
    config.model.kl_schedule = {"_target_": "subprocess.run", "args": ["touch", str(marker)]}  # a crafted run folder
    OmegaConf.save(config, run / "config.yaml")
    refused = run_cli([f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_epochs=3"], cwd=tmp_path)
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 2 and "model.kl_schedule._target_=subprocess.run" in message and not marker.exists()
    before["config.yaml"] = snapshot(run)["config.yaml"]  # the one file the test itself changed
    assert snapshot(run) == before


def test_a_new_run_over_an_existing_one_is_refused(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    before = snapshot(run)
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(compose_config([*TINY_SPRITES, "trainer.max_epochs=1"], output_dir=run))
    assert snapshot(run) == before


def test_last_ckpt_is_the_newest_state_when_validation_stops_improving(tmp_path):
    # mode=min: the best checkpoint by "val/elbo" stays at epoch 0 as the ELBO rises
    overrides = [*TINY_SPRITES, *LOGGED_EVERY_STEP, "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=min"]
    train(compose_config(overrides, output_dir=tmp_path))
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert len(names) == 2 and names[0].startswith("best-epoch000-") and names[1] == "last.ckpt"
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 3 * STEPS_PER_EPOCH
    train(compose_config([*overrides, "trainer.max_epochs=4", "ckpt_path=last"], output_dir=tmp_path))  # in place
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")) == names  # no last-v1, no best-…-v1
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4 * STEPS_PER_EPOCH
    assert training_steps(tmp_path) == list(range(4 * STEPS_PER_EPOCH))


def test_a_moved_run_folder_resumes_in_place_without_duplicate_rows(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "moved")  # the checkpoint was written in another folder
    train(compose_config([*TINY_SPRITES, "trainer.max_epochs=2", "ckpt_path=last"], output_dir=run))
    assert training_steps(run) == sorted(set(training_steps(run))) and validation_epochs(run) == [0, 1]


def test_resuming_into_a_new_folder_starts_its_history_with_the_original(trained_run, tmp_path):
    steps = training_steps(trained_run)
    overrides = [*TINY_SPRITES, "trainer.max_epochs=2", f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}"]
    train(compose_config(overrides, output_dir=tmp_path / "continued"))
    continued = training_steps(tmp_path / "continued")
    assert continued[: len(steps)] == steps and continued == sorted(set(continued))
    assert validation_epochs(tmp_path / "continued") == [0, 1]


# ------------------------------------------------------------------ NaN, bad input, full disk
def test_a_nan_at_a_known_step_is_reported_at_that_step_and_never_checkpointed(tmp_path):
    # step 11 is in epoch 1: epoch 0's checkpoints (step 8) exist and must stay the last ones
    overrides = [
        *TINY_SPRITES,
        "trainer.max_epochs=3",
        "+callbacks.nan={_target_: fault_injection.NaNAtStep, step: 11}",
    ]
    with pytest.raises(NonFiniteLossError, match="at step 11 ") as error:
        train(compose_config(overrides, output_dir=tmp_path))
    assert "noticed at step 16" in str(error.value)  # before epoch 1's validation
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):
        checkpoint = load_checkpoint(path)
        assert checkpoint["global_step"] == STEPS_PER_EPOCH
        assert all(
            torch.isfinite(value).all() for value in checkpoint["state_dict"].values() if value.is_floating_point()
        )
    assert "nan" not in " ".join(p.name for p in (tmp_path / "checkpoints").iterdir())


def test_the_summary_shows_nan_rather_than_dropping_it(tmp_path, capsys):
    experiment = build(compose_config([*TINY_SPRITES], output_dir=tmp_path))
    print_summary(experiment, {"val/elbo": float("nan"), "val/kl": 3.0})
    printed = capsys.readouterr().out
    assert "val/elbo" in printed and "nan" in printed and "3.000" in printed


def test_latent_size_zero_fails_before_the_trainer_is_built(tmp_path):
    with pytest.raises(ConfigError, match="model.latent_dim must be a whole number >= 1, got 0"):
        build(compose_config([*TINY_SPRITES, "model.latent_dim=0"], output_dir=tmp_path))


def test_a_full_disk_is_one_message_naming_the_folder_and_the_old_checkpoint_survives(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full (Linux)")
    path = tmp_path / "checkpoints" / "last.ckpt"
    atomic_write(path, lambda f: torch.save({"step": 1}, f))
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.symlink_to("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    with pytest.raises(RunFolderError) as error:
        atomic_write(path, lambda f: torch.save({"step": 2, "weights": torch.zeros(100_000)}, f))
    assert str(error.value).startswith(f"No space left on the disk of {path.parent} while writing last.ckpt")
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert not temporary.exists() and not temporary.is_symlink()


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    from vae_zoo.run.checkpointing import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(CheckpointError, match="the weight w is NaN or infinite"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("inf"), 0.0])}}, path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(3))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip"])
def test_an_empty_or_corrupt_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / "last.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        load_checkpoint(path)


@pytest.mark.slow
def test_a_run_made_before_new_defaults_continues_as_it_was_made(tmp_path):
    """A run folder from an older vae_zoo lacks settings added since (here: the sprites'
    sprite_size and the warm-up length, whose defaults are not what the run was built with).
    Continuing it must not pull today's defaults in: those settings are left out, the classes'
    own defaults apply, as when the run was made; a value given on the command line still counts."""
    run = tmp_path / "run"
    first = run_cli(
        [*TINY_SPRITES, *LOGGED_EVERY_STEP, "kl_schedule=constant", "trainer.max_epochs=1", f"hydra.run.dir={run}"],
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    old = OmegaConf.load(run / "config.yaml")  # as an older vae_zoo wrote it
    del old.data["sprite_size"]
    OmegaConf.save(old, run / "config.yaml")
    result = run_cli([f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_epochs=2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "without data.sprite_size" in result.stdout
    config = OmegaConf.load(run / "config.yaml")
    assert "sprite_size" not in config.data and "warmup_steps" not in config.model.kl_schedule
    betas = [
        float(row["train/beta"]) for row in csv.DictReader(open(run / "csv" / "metrics.csv")) if row.get("train/beta")
    ]
    assert betas and set(betas) == {1.0}  # still constant β: today's default warm-up did not come in
    again = run_cli(
        [f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_epochs=3", "data.sprite_size=1.5"], cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert OmegaConf.load(run / "config.yaml").data.sprite_size == 1.5


def test_a_run_made_before_the_package_was_laid_out_by_layer_still_evaluates(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    text = (run / "config.yaml").read_text()
    old = text.replace("vae_zoo.blocks.", "vae_zoo.").replace(
        "vae_zoo.run.", "vae_zoo."
    )  # the targets it was made with
    assert "_target_: vae_zoo.likelihoods.Bernoulli" in old and "vae_zoo.checkpointing.LastCheckpoint" in old
    (run / "config.yaml").write_text(old)
    overrides = ["evaluate.fid=false", "evaluate.num_importance_samples=2", "evaluate.disentanglement=false"]
    report = evaluate(compose_run_config(run, overrides, output_dir=tmp_path / "eval"))
    assert report.metrics["elbo"]["value"] < 0
