"""Building objects from configs: Hydra's ``instantiate`` with vae_zoo's one-line errors, and
the check that a model fits the data it is given. Used by training, evaluation and the run
loader alike (none of them imports another for it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from vae_zoo.errors import ConfigError, VaeZooError

if TYPE_CHECKING:
    from vae_zoo.data.base import InMemoryDataModule
    from vae_zoo.models.base import ELBOModule


def check_compatible(datamodule: InMemoryDataModule, model: ELBOModule) -> None:
    """The model must be built for the images the data serves, and a conditional model (its
    capabilities say so) for the condition the data provides."""
    if tuple(datamodule.image_shape) != tuple(model.image_shape):
        c, s, _ = datamodule.image_shape
        raise ConfigError(
            f"The data serves {c}x{s}x{s} images (channels x height x width) but the model was "
            f"built for {'x'.join(map(str, model.image_shape))}. Leave model.image_channels and "
            f"model.image_size at their defaults (${{data.channels}}, ${{data.image_size}}) or "
            f"set data.image_size / data.channels to match."
        )
    if not model.capabilities.conditional:
        return
    label_key = model.label_key
    data_name = type(datamodule).__name__
    if datamodule.num_classes is None:
        raise ConfigError(
            f"{type(model).__name__} is conditional, but {data_name} has no labels. Use data with "
            "labels (mnist, fashion_mnist, cifar10, celeba, dsprites, sprites, or a folder with one "
            "subfolder per class and data.num_classes set) or an unconditional model."
        )
    wanted = (label_key, model.encoding, model.num_classes)
    offered = (datamodule.condition_key, datamodule.condition_encoding, datamodule.num_classes)
    if wanted != offered:
        raise ConfigError(
            f"{type(model).__name__} reads batch['{wanted[0]}'] as {wanted[1]} of size {wanted[2]}, but "
            f"{data_name} provides '{offered[0]}' as {offered[1]} of size {offered[2]}. Set "
            f"model.label_key={offered[0]} model.encoding={offered[1]} model.num_classes={offered[2]}."
        )


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
