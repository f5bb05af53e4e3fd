"""What a run shows, each validation epoch: image grids and charts, on rank zero.

Every callback here is a :class:`MediaCallback`: at the end of every ``every_n_epochs``-th
validation, on rank zero, with the model in eval mode, it renders one picture and hands it to
:func:`vae_zoo.callbacks.media.log_image` (PNG in the run folder + W&B + TensorBoard). Inputs
are fixed across epochs - the first validation batch, prior draws made once from ``seed`` - so
the same cell shows the same example or the same z every epoch. No collective op runs here,
so the other ranks never wait on rank zero. A callback that does not apply to the model (a
traversal of a VQ-VAE, a class grid of an unconditional model) does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from vae_zoo.blocks.stats import ACTIVE_UNIT_THRESHOLD
from vae_zoo.callbacks.media import bar_chart, grid, log_image


@dataclass
class PictureInputs:
    """What a picture is rendered from, besides the model: the same in training (the callbacks
    fill it from the trainer) and in ``python -m vae_zoo.sample`` (filled from a checkpoint).

    Attributes:
        batch: model-ready examples (``image``, and ``label`` etc. for conditional models).
        metrics: epoch metrics by name, e.g. ``val/kl_dim/<i>`` (nats) and ``val/active_units``.
        epoch: the epoch the picture belongs to (None outside training).
    """

    batch: dict[str, Tensor]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    epoch: int | None = None


class MediaCallback(L.Callback):
    """Base class: subclasses name their picture and implement :meth:`render`, which needs only
    the model and :class:`PictureInputs` (no trainer).

    Args:
        dirpath: folder for the PNG files (the run folder's ``images/``).
        every_n_epochs: render every this many validation epochs.
        num_images: how many validation examples the fixed batch keeps.
    """

    name = "media"

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 16):
        self.dirpath = Path(dirpath)
        self.every_n_epochs, self.num_images = every_n_epochs, num_images
        self.fixed_batch: dict[str, Tensor] | None = None
        self.written: list[Path] = []

    def applies_to(self, module: L.LightningModule) -> bool:
        return True

    def render(self, module: L.LightningModule, inputs: PictureInputs) -> Tensor:
        """Return one (3, H, W) image in [0, 1] (called under ``torch.no_grad`` in eval mode)."""
        raise NotImplementedError

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # validation is not shuffled: its first batch is the same every epoch
        if self.fixed_batch is None and batch_idx == 0:
            self.fixed_batch = {k: v[: self.num_images].detach().clone() for k, v in batch.items()}

    # on_validation_end, not on_validation_epoch_end: Lightning runs the callbacks' epoch-end
    # hooks before the module's, so the epoch's metrics (val/kl_dim/<i>) exist only here.
    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if self.fixed_batch is None or not self.applies_to(pl_module):
            return
        inputs = PictureInputs(batch=self.fixed_batch, metrics=trainer.callback_metrics, epoch=trainer.current_epoch)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            image = self.render(pl_module, inputs)
        pl_module.train(was_training)
        self.written.append(log_image(trainer, self.name, image, self.dirpath))

    def batch_on(self, module: L.LightningModule, inputs: PictureInputs) -> tuple[Tensor, Tensor | None]:
        """The first ``num_images`` examples on the model's device: images and the model's condition."""
        batch = {k: v[: self.num_images].to(module.device) for k, v in inputs.batch.items()}
        return batch["image"], module.condition(batch)


class Reconstructions(MediaCallback):
    """Rows of ``nrow`` validation inputs, each followed by the row of their reconstructions."""

    name = "reconstructions"

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 32, nrow: int = 8):
        super().__init__(dirpath, every_n_epochs, num_images)
        self.nrow = nrow

    def render(self, module: L.LightningModule, inputs: PictureInputs) -> Tensor:
        images, condition = self.batch_on(module, inputs)
        recon = module.reconstruct(images, condition)
        rows = [torch.cat(pair) for pair in zip(images.split(self.nrow), recon.split(self.nrow))]
        return grid(torch.cat(rows), self.nrow)


class PriorSamples(MediaCallback):
    """Decoded prior draws (``model.prior_sample``), made once from ``seed``."""

    name = "prior_samples"

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_images: int = 64, nrow: int = 8, seed: int = 0):
        super().__init__(dirpath, every_n_epochs, num_images)
        self.nrow, self.seed = nrow, seed
        self.prior: dict[str, Tensor] | None = None

    def render(self, module: L.LightningModule, inputs: PictureInputs) -> Tensor:
        if self.prior is None:
            self.prior = module.prior_sample(self.num_images, torch.Generator().manual_seed(self.seed))
        return grid(module.generate(**self.prior), self.nrow)


def dims_by_kl(metrics: Mapping[str, Any], latent_dim: int) -> list[int]:
    """Latent dimensions sorted by their validation KL, largest first (from the logged,
    rank-reduced ``val/kl_dim/<i>``)."""
    kl = [float(metrics.get(f"val/kl_dim/{i}", 0.0)) for i in range(latent_dim)]
    return sorted(range(latent_dim), key=lambda i: -kl[i])


class LatentTraversals(MediaCallback):
    """Rows = the ``num_dims`` latent dimensions with the largest KL; columns = ``num_values``
    values from -``span`` to +``span`` for that dimension, the others held at the posterior
    mean of the first validation image. Gaussian latents only."""

    name = "traversals"

    def __init__(
        self, dirpath: str, every_n_epochs: int = 1, num_dims: int = 8, num_values: int = 9, span: float = 3.0
    ):
        super().__init__(dirpath, every_n_epochs, num_images=1)
        self.num_dims, self.num_values, self.span = num_dims, num_values, span

    def applies_to(self, module: L.LightningModule) -> bool:
        return module.capabilities.gaussian_posterior

    def render(self, module: L.LightningModule, inputs: PictureInputs) -> Tensor:
        images, condition = self.batch_on(module, inputs)
        code = module.latent_code(images, condition)[0]
        values = torch.linspace(-self.span, self.span, self.num_values, device=module.device)
        dims = [dim for dim in dims_by_kl(inputs.metrics, module.latent_dim) if dim in module.traversal_dims]
        dims = dims[: self.num_dims]
        codes = code.repeat(len(dims) * self.num_values, 1)
        for row, dim in enumerate(dims):
            codes[row * self.num_values : (row + 1) * self.num_values, dim] = values
        if condition is not None:
            condition = condition[:1].expand(len(codes), -1)
        return grid(module.decode_latent(codes, condition), self.num_values)


class Interpolations(MediaCallback):
    """Rows = pairs of validation images (first, second), columns = ``steps`` decodings of
    latent codes on the straight line between their codes (first and last column: the two
    images' own reconstructions)."""

    name = "interpolations"

    def __init__(self, dirpath: str, every_n_epochs: int = 1, num_pairs: int = 4, steps: int = 10):
        super().__init__(dirpath, every_n_epochs, num_images=2 * num_pairs)
        self.num_pairs, self.steps = num_pairs, steps

    def render(self, module: L.LightningModule, inputs: PictureInputs) -> Tensor:
        images, condition = self.batch_on(module, inputs)
        codes = module.latent_code(images, condition)
        pairs = min(self.num_pairs, len(codes) // 2)
        t = torch.linspace(0, 1, self.steps, device=module.device)
        rows, row_conditions = [], []
        for p in range(pairs):
            start, end = codes[2 * p], codes[2 * p + 1]
            weights = t.view(-1, *([1] * start.dim()))
            rows.append(start + weights * (end - start))
            if condition is not None:
                c0, c1 = condition[2 * p], condition[2 * p + 1]
                row_conditions.append(c0 + t[:, None] * (c1 - c0))
        decoded = module.decode_latent(torch.cat(rows), torch.cat(row_conditions) if row_conditions else None)
        return grid(decoded, self.steps)


class ClassConditionalGrid(MediaCallback):
    """Conditional models with one-hot labels: row c holds ``samples_per_class`` draws given
    label c (``model.class_grid_sample``, made from ``seed``: the CVAE decodes the same z in
    every row, a learned prior over codes draws the codes given each label)."""

    name = "class_conditional"

    def __init__(self, dirpath: str, every_n_epochs: int = 1, samples_per_class: int = 8, seed: int = 0):
        super().__init__(dirpath, every_n_epochs, num_images=1)
        self.samples_per_class, self.seed = samples_per_class, seed

    def applies_to(self, module: L.LightningModule) -> bool:
        return module.capabilities.conditional and module.encoding == "one_hot"

    def render(self, module: L.LightningModule, inputs: PictureInputs) -> Tensor:
        draws = module.class_grid_sample(self.samples_per_class, torch.Generator().manual_seed(self.seed))
        return grid(module.generate(**draws), self.samples_per_class)


class KLPerDimension(MediaCallback):
    """Bar chart of the validation KL of each latent dimension (nats), with the number of
    active units (Burda et al.) in the title. The values themselves are logged as scalars
    ``val/kl_dim/<i>`` by the model."""

    name = "kl_per_dim"

    def __init__(self, dirpath: str, every_n_epochs: int = 1):
        super().__init__(dirpath, every_n_epochs, num_images=1)

    def applies_to(self, module: L.LightningModule) -> bool:
        return module.capabilities.gaussian_posterior

    def render(self, module: L.LightningModule, inputs: PictureInputs) -> Tensor:
        metrics = inputs.metrics
        kl = [float(metrics[f"val/kl_dim/{i}"]) for i in range(module.latent_dim)]
        active = int(metrics["val/active_units"])
        title = f"KL per latent dimension, epoch {inputs.epoch}\n{active}/{module.latent_dim} active (A_u > {ACTIVE_UNIT_THRESHOLD})"
        return bar_chart(kl, title, "latent dimension", "KL (nats)")


class CodebookUsage(MediaCallback):
    """VQ-VAE: bar chart of each code's usage (EMA of assignments per batch over training),
    sorted, with the dead-code threshold as a line."""

    name = "codebook_usage"

    def __init__(self, dirpath: str, every_n_epochs: int = 1):
        super().__init__(dirpath, every_n_epochs, num_images=1)

    def applies_to(self, module: L.LightningModule) -> bool:
        return module.capabilities.codebook

    def render(self, module: L.LightningModule, inputs: PictureInputs) -> Tensor:
        quantizer = module.quantizer
        usage = quantizer.usage.sort(descending=True).values.cpu().tolist()
        dead = sum(u < quantizer.dead_code_threshold for u in usage)
        title = f"Codebook usage, epoch {inputs.epoch}\n{dead}/{quantizer.num_codes} dead codes"
        return bar_chart(
            usage, title, "code (sorted by usage)", "assignments per batch (EMA)", quantizer.dead_code_threshold
        )
