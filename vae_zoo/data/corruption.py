"""Input corruptions for denoising autoencoders (Vincent et al. 2008; Im et al. 2017, DVAE).

The model is given the corrupted image as input and scored against the clean one (see the
batch contract in :mod:`vae_zoo.data.base`). A corruption is an object built from its
``_target_`` like everything else, chosen with the ``corruption`` config group
(``conf/corruption/``)::

    python -m vae_zoo.train corruption=gaussian data.corruption.std=0.1   # x + N(0, std^2), clipped to [0, 1]
    python -m vae_zoo.train corruption=mask data.corruption.fraction=0.25 # each pixel (all channels) set to 0 w.p. fraction

A corruption of your own subclasses :class:`Corruption` and is named by its ``_target_``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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


def check_corruption(corruption: Any) -> Corruption | None:
    """The data config's ``corruption``: None or a :class:`Corruption` (Hydra builds it from its
    ``_target_``, e.g. ``corruption=gaussian``).

    Raises:
        ConfigError: anything else, e.g. the ``{kind: gaussian, std: 0.1}`` mapping of vae_zoo
            before 0.2, with the form to use instead.
    """
    if corruption is None or isinstance(corruption, Corruption):
        return corruption
    raise ConfigError(
        f"data.corruption must be null or a Corruption built from its _target_, got {corruption!r}. "
        "Pick one on the command line (corruption=gaussian data.corruption.std=0.1, or corruption=mask "
        "data.corruption.fraction=0.25), or write {_target_: vae_zoo.data.corruption.GaussianNoise, std: 0.1} "
        "in a config."
    )
