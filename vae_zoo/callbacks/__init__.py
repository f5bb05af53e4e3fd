"""Lightning callbacks that show what a run learns (see :mod:`vae_zoo.callbacks.images`)."""

from vae_zoo.callbacks.images import (
    ClassConditionalGrid,
    CodebookUsage,
    Interpolations,
    KLPerDimension,
    LatentTraversals,
    MediaCallback,
    PriorSamples,
    Reconstructions,
)

__all__ = [
    "MediaCallback",
    "Reconstructions",
    "PriorSamples",
    "LatentTraversals",
    "Interpolations",
    "ClassConditionalGrid",
    "KLPerDimension",
    "CodebookUsage",
]
