"""Input corruptions for denoising autoencoders (Vincent et al. 2008; Im et al. 2017, DVAE).

The model is given the corrupted image as input and scored against the clean one (see the
batch contract in :mod:`vae_zoo.data.base`). A corruption is chosen in the data config::

    corruption: null                           # off (default)
    corruption: {kind: gaussian, std: 0.1}     # x + N(0, std^2), clipped to [0, 1]
    corruption: {kind: mask, fraction: 0.25}   # each pixel (all its channels) set to 0 w.p. fraction

or on the command line, e.g. ``data.corruption={kind:mask,fraction:0.5}``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from vae_zoo.errors import ConfigError


class Corruption(ABC):
    """Maps clean images to corrupted ones, on whatever device the images are."""

    @abstractmethod
    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Corrupt a batch.

        Args:
            images: float (B, C, H, W) in [0, 1]; not modified.
            generator: random generator on the images' device (None: the global one).

        Returns:
            float (B, C, H, W) in [0, 1], a new tensor.
        """


class GaussianNoise(Corruption):
    """Additive Gaussian noise of standard deviation ``std`` (in units of the [0, 1] pixel
    range), clipped back to [0, 1]."""

    def __init__(self, std: float):
        if not std > 0:
            raise ConfigError(f"data.corruption.std must be > 0, got {std}.")
        self.std = float(std)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        return (images + self.std * noise).clamp_(0.0, 1.0)

    def __repr__(self) -> str:
        return f"GaussianNoise(std={self.std})"


class PixelMask(Corruption):
    """Masking noise: each pixel position is set to 0 in all channels, independently with
    probability ``fraction``."""

    def __init__(self, fraction: float):
        if not 0 < fraction < 1:
            raise ConfigError(f"data.corruption.fraction must be in (0, 1), got {fraction}.")
        self.fraction = float(fraction)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, _, h, w = images.shape
        keep = torch.rand((b, 1, h, w), generator=generator, device=images.device) >= self.fraction
        return images * keep

    def __repr__(self) -> str:
        return f"PixelMask(fraction={self.fraction})"


CORRUPTIONS: dict[str, type[Corruption]] = {"gaussian": GaussianNoise, "mask": PixelMask}
_PARAMETERS = {"gaussian": "std", "mask": "fraction"}


def make_corruption(config: Mapping[str, Any] | Corruption | None) -> Corruption | None:
    """Build the corruption a data config asks for.

    Args:
        config: None (no corruption), a mapping ``{"kind": <name in CORRUPTIONS>, <its
            parameter>: value}``, or a ready :class:`Corruption`.

    Raises:
        ConfigError: unknown kind, or missing / unexpected / out-of-range parameters.
    """
    if config is None or isinstance(config, Corruption):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(f"data.corruption must be null or a mapping like {{kind: gaussian, std: 0.1}}, got {config!r}.")
    params = dict(config)
    kind = params.pop("kind", None)
    if kind not in CORRUPTIONS:
        examples = ", ".join(f"{{kind: {k}, {p}: ...}}" for k, p in _PARAMETERS.items())
        raise ConfigError(f"data.corruption.kind must be one of {sorted(CORRUPTIONS)}, got {kind!r}. Examples: {examples}.")
    if set(params) != {_PARAMETERS[kind]}:
        raise ConfigError(
            f"data.corruption of kind {kind!r} takes exactly one parameter, {_PARAMETERS[kind]!r}; "
            f"got {sorted(params)}."
        )
    return CORRUPTIONS[kind](**params)
