"""An optional part used without its extra stops before any work, naming the extra to install.

"Not installed" is made real for one process: tests/without/sitecustomize.py makes the named modules
fail to import at start-up (CLI tests), or sys.modules holds None for them (in-process tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from vae_zoo.support.extras import MissingExtraError

from conftest import TINY_SPRITES, run_cli

WITHOUT = Path(__file__).parent / "without"


def env_without(*modules: str) -> dict:
    path = os.pathsep.join([str(WITHOUT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "VAE_ZOO_TEST_WITHOUT": ",".join(modules)}


def test_tensorboard_logger_without_tensorboard_names_the_extra(tmp_path):
    result = run_cli(
        [*TINY_SPRITES, "logger=tensorboard"], cwd=tmp_path, env=env_without("tensorboard", "tensorboardX")
    )
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert "logger (lightning.pytorch.loggers.TensorBoardLogger) needs tensorboard" in message
    assert "pip install 'vae_zoo[tensorboard]'" in message and "Traceback" not in result.stderr
    runs = list((tmp_path / "logs" / "train" / "runs").glob("*/config.yaml"))
    assert not runs  # stopped before the run folder was written


def test_slurm_launcher_without_submitit_names_the_extra(tmp_path):
    result = run_cli(
        ["-m", "hydra/launcher=slurm", *TINY_SPRITES],
        cwd=tmp_path,
        env=env_without("hydra_plugins.hydra_submitit_launcher"),
    )
    assert result.returncode != 0
    assert "pip install 'vae_zoo[slurm]'" in " ".join(result.stderr.split())


def test_in_process_parts_name_their_extras(tmp_path, monkeypatch):
    from vae_zoo.data import CelebADataModule
    from vae_zoo.metrics.fid import FeatureExtractorUnavailableError, inception_v3_features

    for module in ("torch_fidelity", "gdown", "optuna", "wandb_workspaces"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(FeatureExtractorUnavailableError, match=r"pip install 'vae_zoo\[fid\]'"):
        inception_v3_features()
    with pytest.raises(MissingExtraError, match=r"Downloading CelebA .* needs gdown.*vae_zoo\[celeba\]"):
        CelebADataModule(root=str(tmp_path), download=True).prepare_data()
    from hydra_plugins.vae_zoo_optuna_sweeper.optuna_sweeper import OptunaSweeper

    with pytest.raises(MissingExtraError, match=r"hparams_search=optuna needs optuna.*vae_zoo\[optuna\]"):
        OptunaSweeper(study_name="s", storage=str(tmp_path / "s.journal")).sweep([])
    from vae_zoo.evaluation.dashboard import workspace

    with pytest.raises(MissingExtraError, match=r"vae_zoo\[dashboard\]"):
        workspace("someone", "vae_zoo")
