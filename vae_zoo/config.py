"""Finding and composing the Hydra configs without the command line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict


def config_dir() -> Path:
    """The folder holding ``train.yaml``.

    In a source checkout it is the top-level ``conf/``; in an installed wheel the same files
    are shipped as ``vae_zoo/conf`` (see ``[tool.hatch.build.targets.wheel.force-include]``).
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"vae_zoo's Hydra configs (train.yaml) are neither in {package / 'conf'} nor in "
        f"{package.parent / 'conf'}. Reinstall the package (pip install vae_zoo) or run from "
        "a source checkout."
    )


def compose_config(
    overrides: Sequence[str] = (), output_dir: str | Path | None = None, config_name: str = "train"
) -> DictConfig:
    """Compose a config as the CLI would, for tests and notebooks.

    ``paths.output_dir`` normally comes from Hydra's run folder; pass ``output_dir`` to use
    the config outside a Hydra run.
    """
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg
