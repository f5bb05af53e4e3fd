"""Finding and composing the Hydra configs without the command line."""

from __future__ import annotations

import json
import math
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
    package = Path(__file__).resolve().parents[1]  # vae_zoo/, above vae_zoo/run/
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


def check_run_settings(cfg: DictConfig) -> None:
    """Refuse numbers a run cannot use before anything is built: every optimizer's learning rate
    (``model.optimizer.lr``, which ``training.lr`` sets by default, and any other optimizer under
    ``model``) a finite number > 0; ``trainer.max_epochs`` and ``trainer.max_steps`` whole numbers
    >= -1 (-1: no limit) or null. Lightning and torch would otherwise fail with a traceback at
    the first step, or, for ``lr=0``, train for nothing.

    Raises:
        ConfigError: naming the key, the value and what it must be.
    """
    from vae_zoo.errors import ConfigError

    problems = []
    for key, node in _target_nodes(cfg.get("model"), "model"):
        if str(node.get("_target_", "")).startswith("torch.optim.") and "lr" in node:
            lr = node.get("lr")
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
                problems.append(f"{key}.lr={lr!r} is not a learning rate: it must be a number > 0 (e.g. 1e-3)")
    for key in ("trainer.max_epochs", "trainer.max_steps", "training.max_epochs"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1):
            problems.append(f"{key}={value!r} must be a whole number >= -1 (-1: no limit) or null")
    if problems:
        raise ConfigError(f"{'; '.join(problems)}. Nothing was built or run.")


def _target_nodes(node: Any, path: str) -> list[tuple[str, DictConfig]]:
    """(key, node) for ``node`` and every config mapping below it that has a ``_target_``."""
    if not isinstance(node, DictConfig):
        return []
    found = [(path, node)] if "_target_" in node else []
    for key, value in node.items():
        found += _target_nodes(value, f"{path}.{key}")
    return found
