"""Finding and composing the Hydra configs without the command line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict


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


def flatten_config(cfg: Any) -> dict[str, str]:
    """A config (or plain nested dict) as dotted keys -> value text; lists and empty mappings
    are JSON text, interpolations are left unresolved."""
    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, str] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = json.dumps(node) if isinstance(node, (list, dict)) else str(node)

    walk(container, "")
    return flat
