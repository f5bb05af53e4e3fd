"""One path for images and charts to every configured logger.

An image (a grid made with torchvision's ``make_grid``, or a chart rendered with matplotlib)
is always written as a PNG into the run folder, so a run's folder is complete whatever
loggers are on, and is also sent to each logger that takes images: W&B (``wandb.Image``
through Lightning's ``WandbLogger.log_image``) and TensorBoard (``add_image``). Several loggers
at once work: each gets the same picture.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid, save_image


def grid(images: Tensor, nrow: int) -> Tensor:
    """(N, C, H, W) images in [0, 1] -> one (3, H', W') grid image (grey expanded to RGB)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=0.5)


def bar_chart(values: Sequence[float], title: str, xlabel: str, ylabel: str, threshold: float | None = None) -> Tensor:
    """Render a bar chart with matplotlib to a (3, H, W) float image in [0, 1].

    A ``Figure`` of its own, not pyplot: the process's backend is left alone (a notebook keeps
    its inline plots) and no figure is registered anywhere to leak."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(4.0, 0.25 * len(values) + 2.0), 3.0), dpi=100)
    axes = figure.subplots()
    axes.bar(range(len(values)), values, color="tab:blue")
    if threshold is not None:
        axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=1)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    rgb = np.array(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


def media_key(name: str) -> str:
    """The W&B and TensorBoard key of a picture: ``media/<name>`` (the W&B dashboard's panels use it)."""
    return f"media/{name}"


def log_image(trainer: L.Trainer, name: str, image: Tensor, dirpath: str | Path) -> Path:
    """Write ``image`` (3, H, W) in [0, 1] as ``<dirpath>/<name>_epoch<E>.png`` and send it to
    the W&B and TensorBoard loggers as ``media/<name>``. Call on rank zero only."""
    path = Path(dirpath) / f"{name}_epoch{trainer.current_epoch:04d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(image, path)
    key, step = media_key(name), trainer.global_step
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=step, caption=[f"epoch {trainer.current_epoch}"])
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step)
    return path
