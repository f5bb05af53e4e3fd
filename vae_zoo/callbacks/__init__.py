"""Lightning callbacks that show what a run learns."""

from vae_zoo.callbacks.images import ImageGrids

__all__ = ["ImageGrids"]
