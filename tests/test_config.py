"""Every config in conf/ composes and builds; the configs ship in the wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from vae_zoo.errors import ConfigError
from vae_zoo.run.config import compose_config, config_dir
from vae_zoo.run.experiment import build

from conftest import REPO, TINY_DATA, TINY_SPRITES, make_vq_vae_run

# options that only make sense together with another choice
COMPANIONS = {"conv_grid": ["model=vq_vae"]}
# groups of parts that model configs include, not chosen in train.yaml's defaults: added with +
PARTS = {"training_override"}
GROUPS = {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in config_dir().iterdir() if p.is_dir()}


def test_config_dir_is_the_source_conf():
    assert config_dir() == REPO / "conf"
    assert {"model", "data", "trainer", "logger", "callbacks", "paths", "likelihood", "net"} <= set(GROUPS)


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_config_composes_and_builds(group, option, tmp_path, mnist_root):
    overrides = [f"{'+' if group in PARTS else ''}{group}={option}", *COMPANIONS.get(option, [])]
    if (group, option) == ("data", "mnist"):  # training=mnist picks MNIST's settings for the default data
        overrides += [f"paths.data_dir={mnist_root}", "data.download=false"]
    if option == "vq_prior":  # a second stage: it needs a VQ-VAE run to build on
        overrides += [f"model.first_stage.path={make_vq_vae_run(tmp_path / 'vq_vae')}"]
    cfg = compose_config(overrides, output_dir=tmp_path)
    data = instantiate(cfg.data)
    model = instantiate(cfg.model)
    assert tuple(model.image_shape) == tuple(data.image_shape)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert option in ("gpu", "ddp")  # composes; a Trainer on GPUs needs a GPU to build
    else:
        instantiate(cfg.trainer)
    for node in list(cfg.callbacks.values()) + list(cfg.logger.values()):
        if node is not None:
            instantiate(node)


def test_likelihood_follows_data_and_cli_wins(tmp_path):
    assert compose_config(["data=mnist"], output_dir=tmp_path).likelihood._target_.endswith("Bernoulli")
    cfg = compose_config(["data=mnist", "likelihood=gaussian", "likelihood.sigma=0.3"], output_dir=tmp_path)
    assert cfg.model.likelihood.sigma == 0.3 and cfg.model.likelihood._target_.endswith("Gaussian")


@pytest.mark.parametrize("data", ["sprites", "dsprites"])
def test_the_clip_that_guards_the_sprites_floor_is_off_for_beta_tcvae_which_has_no_floor(data, tmp_path):
    vae = compose_config([f"data={data}"], output_dir=tmp_path)
    assert vae.trainer.gradient_clip_val == 50 and vae.model.kl_schedule.free_bits == 0.5
    tc = compose_config([f"data={data}", "model=beta_tcvae"], output_dir=tmp_path)
    assert tc.trainer.gradient_clip_val is None and "free_bits" not in tc.model.kl_schedule
    asked = compose_config([f"data={data}", "model=beta_tcvae", "trainer.gradient_clip_val=5"], output_dir=tmp_path)
    assert asked.trainer.gradient_clip_val == 5  # the command line still wins


def test_a_built_beta_tcvae_trainer_does_not_clip(tmp_path):
    experiment = build(compose_config(["model=beta_tcvae", *TINY_DATA], output_dir=tmp_path))
    assert experiment.trainer.gradient_clip_val is None


def test_build_without_hydra_cli(tmp_path):
    experiment = build(compose_config(TINY_SPRITES, output_dir=tmp_path))
    assert experiment.model.latent_dim == 4 and experiment.trainer.max_epochs == 2


def test_configs_are_found_from_a_built_wheel(tmp_path):
    """Build the wheel, unpack it alone on sys.path, and run the CLI's config stage from it."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("vae_zoo-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "vae_zoo" / "conf" / "train.yaml").is_file()
    code = "import vae_zoo.run.config as c; print(c.config_dir())"
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert Path(where.stdout.strip()) == site / "vae_zoo" / "conf"
    shown = subprocess.run(
        [sys.executable, "-m", "vae_zoo.train", "--cfg", "job", "model.latent_dim=7"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "latent_dim: 7" in shown.stdout and "vae_zoo.models.VAE" in shown.stdout


@pytest.mark.parametrize(
    "overrides,expected", [(["net=conv_grid"], "net=conv or net=mlp"), (["model=vq_vae", "net=conv"], "net=conv_grid")]
)
def test_mismatched_net_and_model_say_which_net_fits(tmp_path, overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        build(compose_config([*TINY_DATA, *overrides], output_dir=tmp_path))
