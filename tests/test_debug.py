"""The debug config group (conf/debug/): each option runs, and does what it says."""

from __future__ import annotations

import csv

from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train

from conftest import TINY_SPRITES, run_cli


def history(run_dir, key):
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def test_fast_dev_run_runs_one_batch_into_a_debug_folder(tmp_path):
    result = run_cli(["debug=fast_dev_run", *TINY_SPRITES], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = (tmp_path / "logs" / "debug" / "runs").iterdir()  # kept apart from the training runs
    assert not (tmp_path / "logs" / "train").exists()
    assert (
        "Running in `fast_dev_run` mode: will run the requested loop using 1 batch(es)"
        in (run / "train.log").read_text()
    )
    assert list((run / "images").glob("reconstructions_epoch0000.png"))  # every callback ran once


def test_overfit_drives_the_loss_of_one_batch_down(tmp_path):
    cfg = compose_config(["debug=overfit", *TINY_SPRITES, "trainer.max_epochs=25"], output_dir=tmp_path)
    assert cfg.trainer.overfit_batches == 1 and cfg.trainer.detect_anomaly and not cfg.test
    train(cfg)
    loss = history(tmp_path, "train/loss")  # one step per epoch: the same batch each time
    assert len(loss) == 25 and loss[-1] < 0.85 * loss[0], loss


def test_profiler_writes_where_the_time_went(tmp_path):
    train(compose_config(["debug=profiler", *TINY_SPRITES, "trainer.limit_train_batches=4"], output_dir=tmp_path))
    report = (tmp_path / "fit-profile.txt").read_text()
    assert "run_training_epoch" in report and "Mean duration (s)" in report


def test_limit_runs_a_few_batches_of_each_split(tmp_path):
    cfg = compose_config(
        ["debug=limit", *TINY_SPRITES, "trainer.max_epochs=2", "trainer.limit_train_batches=2"], output_dir=tmp_path
    )
    train(cfg)
    assert len(history(tmp_path, "val/elbo")) == 2 and (tmp_path / "checkpoints" / "last.ckpt").is_file()
