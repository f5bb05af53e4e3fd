"""Scale out and never lose work: DDP from the CLI, multiruns, Optuna, published experiment
configs, exact resume, atomic checkpoints and preemption."""

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train
from vae_zoo.support.checkpoint_files import load_checkpoint

from conftest import TINY_DATA, TINY_RUN, TINY_SPRITES, make_mnist_files, run_cli, run_folders
from data_fixtures import write_celeba, write_cifar10, write_dsprites

QUICK = [
    "trainer.max_epochs=1",
    "trainer.max_steps=-1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "callbacks.progress_bar=null",
    "callbacks.reconstructions.num_images=4",
    "callbacks.prior_samples.num_images=4",
]
EXPERIMENTS = {  # tiny data sizes that fit the fixtures; everything else as published
    "beta_vae_dsprites": [
        "data.num_train=64",
        "data.num_val=32",
        "data.num_test=32",
        "data.batch_size=16",
        "data.download=false",
    ],
    "capacity_vae_dsprites": [
        "data.num_train=64",
        "data.num_val=32",
        "data.num_test=32",
        "data.batch_size=16",
        "data.download=false",
    ],
    "vq_vae_cifar10": ["data.val_size=12", "data.batch_size=8", "data.download=false"],
    "cvae_mnist": ["data.val_size=50", "data.download=false"],
    "vae_celeba64": ["data.batch_size=4", "data.download=false"],
    "iwae_binarized_mnist": ["data.val_size=50", "data.download=false"],
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_mnist_files(root)
    write_cifar10(root)
    write_celeba(root)
    write_dsprites(root)
    return root


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_config_composes_and_runs(name, data_root, tmp_path):
    cfg = compose_config(
        [f"experiment={name}", f"paths.data_dir={data_root}", *EXPERIMENTS[name], *QUICK], output_dir=tmp_path
    )
    result = train(cfg)
    assert result.experiment.trainer.global_step == 2
    assert math.isfinite(result.metrics["val/elbo"]) and math.isfinite(result.metrics["test/elbo"])


def test_ddp_on_two_cpu_processes_from_the_cli_uses_one_folder(tmp_path):
    result = run_cli([*TINY_SPRITES, "trainer=ddp_cpu", "trainer.max_epochs=1"], cwd=tmp_path, process=True)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path / "logs")  # one folder, not one per rank
    assert sorted(p.name for p in (tmp_path / "logs" / "train").iterdir()) == ["runs"]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (
        run / "images" / "reconstructions_epoch0000.png"
    ).is_file()
    hparams = yaml.safe_load((run / "csv" / "hparams.yaml").read_text())
    assert hparams["global_batch_size"] == 2 * hparams["batch_size_per_device"] == 64
    assert "test/elbo" in result.stdout  # trained and evaluated end to end
    assert "sync_dist=True" not in result.stderr  # our epoch means are exact: Lightning's advice is silenced
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4  # 256 / (32 x 2)


def test_a_crashing_job_does_not_end_the_multirun(tmp_path):
    # job 0 asks for an image size the net cannot take; job 1 is fine and must still run
    result = run_cli(["-m", *TINY_SPRITES, "trainer.max_epochs=1", "data.image_size=4,32"], cwd=tmp_path)
    assert result.returncode != 0  # Hydra reports the failed job at the end
    assert "cannot take 4x4 images" in result.stderr
    [sweep] = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert not (sweep / "0" / "checkpoints").exists()
    assert (sweep / "1" / "checkpoints" / "last.ckpt").is_file()


def test_optuna_search_returns_a_best_value(tmp_path):
    tiny_net = ["model.encoder.hidden_channels=[8,8,8]", "model.encoder.fc_features=32"]  # latent_dim is searched
    args = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        *TINY_DATA,
        *tiny_net,
        *TINY_RUN,
        "trainer.max_epochs=1",
    ]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [sweep] = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert math.isfinite(best["best_value"]) and best["best_value"] < 0  # an ELBO in nats
    assert {"model.beta", "model.latent_dim", "model.optimizer.lr"} == set(best["best_params"])
    assert len([p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]) == 2


def test_a_misnamed_optimized_metric_fails_clearly(tmp_path):
    args = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        "optimized_metric=val/nope",
        *TINY_SPRITES,
        "trainer.max_epochs=1",
    ]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert "optimized_metric=val/nope was not logged" in message and "val/elbo" in message


def test_resume_reaches_the_same_metrics_as_an_uninterrupted_run(tmp_path):
    """2 epochs, stop, resume to 4, against 4 straight epochs. CPU kernels are deterministic
    for a fixed thread count, and the checkpoint restores model, optimiser, loop counters, KL
    schedule and random states, so the runs should agree to rounding; the tolerance (1e-5
    relative) only allows for a different reduction order in BLAS between processes."""
    overrides = [*TINY_SPRITES, "kl_schedule=warmup", "model.kl_schedule.warmup_steps=20", "test=false"]
    straight = train(compose_config([*overrides, "trainer.max_epochs=4"], output_dir=tmp_path / "straight"))
    first = train(compose_config([*overrides, "trainer.max_epochs=2"], output_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert first.experiment.trainer.global_step == 16
    resumed = train(
        compose_config([*overrides, "trainer.max_epochs=4", f"ckpt_path={last}"], output_dir=tmp_path / "resumed")
    )
    assert resumed.experiment.trainer.global_step == straight.experiment.trainer.global_step == 32
    for key in ("val/elbo", "val/recon", "val/kl", "val/kl_dim/0", "val/kl_dim/3"):
        assert resumed.metrics[key] == pytest.approx(straight.metrics[key], rel=1e-5, abs=1e-6), key
    for (name, a), b in zip(
        straight.experiment.model.state_dict().items(), resumed.experiment.model.state_dict().values()
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


KILL_SCRIPT = """
import sys, torch
from vae_zoo.run.checkpointing import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"step": 1, "weights": torch.zeros(10)}, path)
print("saved", flush=True)
big = {"step": 2, "weights": torch.randn(100_000_000)}  # ~400 MB: takes a while to write
while True:
    io.save_checkpoint(big, path)
"""


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "saved"
    deadline = time.time() + 60
    while not list(tmp_path.glob(".last.ckpt.tmp-*")) and time.time() < deadline:
        time.sleep(0.01)
    [temporary] = list(tmp_path.glob(".last.ckpt.tmp-*"))
    time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # in the middle of writing the big checkpoint
    process.wait()
    assert temporary.exists() and temporary.stat().st_size < 400_000_000  # it really was cut short
    checkpoint = load_checkpoint(path)
    assert checkpoint["step"] == 1  # the previous checkpoint, intact
