"""A model must be built for the data it is trained or evaluated on: the image shape, and for a
conditional model the condition the data provides. Checked before anything trains."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vae_zoo.errors import ConfigError

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
