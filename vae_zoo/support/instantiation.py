"""Building objects from configs: Hydra's ``instantiate`` with vae_zoo's one-line errors naming
the file and key. Used by training, evaluation, the metrics and the run loader alike."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, ListConfig

from vae_zoo.errors import ConfigError, VaeZooError


def instantiate(node: Any, origin: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a user error raised while building (a
    :class:`VaeZooError`) surfaces as itself rather than wrapped in Hydra's exception, and a
    target called with arguments it does not take (a ``TypeError`` from the call) is a
    :class:`ConfigError` of one line naming ``origin`` (the file the config came from), the key,
    the target and what was wrong."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, VaeZooError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from error
        if not isinstance(error.__cause__, TypeError):
            raise
        # Hydra's message names the target and the key: "Error in call to target 'x.Y':\n...\nfull_key: a.b"
        target = re.search(r"target '([^']+)'", str(error))
        key = re.search(r"full_key: (\S+)", str(error))
        raise ConfigError(
            f"{origin or 'The config'}: {key.group(1) if key else 'a _target_ node'} builds "
            f"{target.group(1) if target else 'its _target_'} with arguments it does not take "
            f"({error.__cause__}). Correct or remove them (the target's signature lists what it takes)."
        ) from error


def instantiate_all(group: DictConfig | None, origin: str | None = None) -> list[Any]:
    """Instantiate every non-null entry of a dict-of-configs group (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(node, origin) for node in group.values() if node is not None and "_target_" in node]


def config_origin(cfg: DictConfig) -> str:
    """Where a composed config's values come from, for error messages: a continued or loaded
    run's ``config.yaml`` (with the command line), else the configs and the command line."""
    folder = cfg.get("continued_run") or cfg.get("run_dir")
    if folder:
        return f"{Path(folder) / 'config.yaml'} (with the command line)"
    return "The config (conf/ with the command line)"


def iter_targets(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(config key, target) for every ``_target_`` in ``node``, at any depth."""
    if isinstance(node, (DictConfig, dict)):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        for key, value in items:
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield path or "<root>", str(value)
            else:
                yield from iter_targets(value, where)
    elif isinstance(node, (ListConfig, list, tuple)):
        for index, value in enumerate(node):
            yield from iter_targets(value, f"{path}[{index}]")
