"""What a run shows, checked in the files the loggers wrote (no mocks of wandb or TensorBoard)."""

import csv
import os
from pathlib import Path

from PIL import Image

from conftest import TINY_SPRITES, run_cli, run_folders
from wandb_records import config, history, read_records, run_info

PICTURES = ("reconstructions", "prior_samples", "traversals", "interpolations", "kl_per_dim")


def env_without_wandb_key(tmp_path: Path, **extra: str) -> dict:
    """The environment of a machine where nobody ran `wandb login`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), NETRC=str(tmp_path / "no-netrc"), WANDB_SILENT="true", **extra)
    return env


def run(tmp_path: Path, args: list[str], env: dict | None = None) -> tuple[Path, str]:
    """Run the CLI on tiny sprites; return the run folder and everything it printed."""
    result = run_cli([*TINY_SPRITES, *args], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    [folder] = run_folders(tmp_path / "logs")
    return folder, result.stdout + result.stderr


def test_file_logger_writes_every_picture_and_the_kl_per_dimension(tmp_path):
    folder, output = run(tmp_path, ["model.latent_dim=4"])
    for name in PICTURES:
        for epoch in (0, 1):
            assert Image.open(folder / "images" / f"{name}_epoch{epoch:04d}.png").size[0] > 32
    # pictures that do not apply to an unconditional Gaussian VAE are not made
    assert not list((folder / "images").glob("class_conditional_*")) and not list(
        (folder / "images").glob("codebook_usage_*")
    )
    traversal = Image.open(folder / "images" / "traversals_epoch0001.png")
    assert traversal.size == (9 * 34 + 2, 4 * 34 + 2)  # 4 latent dims (rows) x 9 values, 32 px
    rows = [row for row in csv.DictReader(open(folder / "csv" / "metrics.csv")) if row.get("val/kl")]
    for row in rows:
        per_dim = [float(row[f"val/kl_dim/{i}"]) for i in range(4)]
        assert abs(sum(per_dim) - float(row["val/kl"])) < 1e-4 + 1e-4 * float(row["val/kl"])
        assert 0 <= float(row["val/active_units"]) <= 4


def test_tensorboard_event_files_hold_images_and_per_dimension_kl(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, output = run(tmp_path, ["logger=tensorboard", "trainer.log_every_n_steps=4"])
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {f"media/{name}" for name in PICTURES} <= set(tags["images"])
    assert {"val/kl", "val/elbo", "val/active_units", "train/loss"} <= set(tags["scalars"])
    for epoch in range(2):
        per_dim = sum(events.Scalars(f"val/kl_dim/{i}")[epoch].value for i in range(4))
        assert abs(per_dim - events.Scalars("val/kl")[epoch].value) < 1e-3
    assert len(events.Images("media/reconstructions")) == 2  # one per epoch
    assert "tensorboard --logdir" in output


def wandb_run_dir(folder: Path) -> Path:
    [run_dir] = (folder / "wandb").glob("offline-run-*")
    return run_dir


def wandb_records(folder: Path):
    [path] = wandb_run_dir(folder).glob("run-*.wandb")
    return read_records(path)


def test_wandb_offline_run_holds_config_images_and_per_dimension_kl(tmp_path):
    overrides = ["logger=wandb", "model=beta_vae", "logger.wandb.tags=[smoke]"]
    folder, output = run(tmp_path, overrides, env=env_without_wandb_key(tmp_path, WANDB_MODE="offline"))
    files = wandb_run_dir(folder) / "files"
    images = {p.name.rsplit("_", 2)[0] for p in (files / "media" / "images" / "media").glob("*.png")}
    assert set(PICTURES) <= images
    records = wandb_records(folder)
    info = run_info(records)
    assert info.display_name.endswith(",".join(overrides))  # named from the CLI overrides
    assert list(info.tags) == ["smoke"] and info.job_type == "train"
    cfg = config(records)
    assert cfg["model"]["_target_"] == "vae_zoo.models.BetaVAE" and cfg["model"]["latent_dim"] == 4
    assert cfg["model"]["image_size"] == 32  # resolved, not "${data.image_size}"
    epochs = [row for row in history(records) if "val/kl" in row]
    assert len(epochs) == 2
    for row in epochs:
        assert abs(sum(row[f"val/kl_dim/{i}"] for i in range(4)) - row["val/kl"]) < 1e-4
        assert "val/active_units" in row
    assert "no API key" not in output  # WANDB_MODE was set: no fallback notice
    assert "wandb sync" in output
    for noise in ("anonymous setting has no effect", "URL not available"):  # W&B's warnings about what we did not ask
        assert noise not in output, noise


def test_many_loggers_at_once_and_offline_fallback_without_credentials(tmp_path):
    folder, output = run(tmp_path, ["logger=many"], env=env_without_wandb_key(tmp_path))
    assert "no API key found" in output and "logging offline" in output
    files = wandb_run_dir(folder) / "files"
    assert list((files / "media" / "images" / "media").glob("reconstructions_*.png"))
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert (folder / "images" / "reconstructions_epoch0001.png").is_file()
    # every logger got the same numbers: W&B's history equals the CSV file's
    csv_epochs = [row for row in csv.DictReader(open(folder / "csv" / "metrics.csv")) if row.get("val/kl")]
    wandb_epochs = [row for row in history(wandb_records(folder)) if "val/kl" in row]
    for from_csv, from_wandb in zip(csv_epochs, wandb_epochs, strict=True):
        for i in range(4):
            assert abs(float(from_csv[f"val/kl_dim/{i}"]) - from_wandb[f"val/kl_dim/{i}"]) < 1e-6


def test_each_job_of_a_multirun_gets_its_own_wandb_run(tmp_path):
    env = {**env_without_wandb_key(tmp_path, WANDB_MODE="offline"), "VAE_ZOO_LOG_DIR": str(tmp_path / "logs")}
    result = run_cli(
        ["-m", *TINY_SPRITES, "logger=wandb", "trainer.max_epochs=1", "model.beta=1,4", "model=beta_vae"],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [sweep] = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    runs = [run_info(wandb_records(sweep / job)) for job in ("0", "1")]
    assert runs[0].run_id != runs[1].run_id
    assert runs[0].run_group == runs[1].run_group == sweep.name  # grouped by the sweep
    assert "model.beta=1" in runs[0].display_name.split(",") and "model.beta=4" in runs[1].display_name.split(",")
