"""Lightning callbacks that show what a run learns (see :mod:`vae_zoo.callbacks.images`)."""

from vae_zoo.callbacks.collapse import PosteriorCollapseWatch
from vae_zoo.callbacks.images import (
    ClassConditionalGrid,
    CodebookUsage,
    Interpolations,
    KLPerDimension,
    LatentTraversals,
    MediaCallback,
    PictureInputs,
    PriorSamples,
    Reconstructions,
)
from vae_zoo.callbacks.progress import ProgressBar

__all__ = [
    "MediaCallback",
    "PictureInputs",
    "Reconstructions",
    "PriorSamples",
    "LatentTraversals",
    "Interpolations",
    "ClassConditionalGrid",
    "KLPerDimension",
    "CodebookUsage",
    "ProgressBar",
    "PosteriorCollapseWatch",
]
