"""PNG grids of reconstructions and prior samples, written each validation epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchvision.utils import save_image


class ImageGrids(L.Callback):
    """Every ``every_n_epochs`` validation epochs, write to ``dirpath``:

    * ``recon_epoch<E>.png``: a fixed validation batch, each row of ``nrow`` inputs followed
      by a row of their reconstructions (mean of p(x|z) at z = E_q[z]);
    * ``samples_epoch<E>.png``: decoded prior draws (``model.prior_sample``) made once from
      ``seed``, so the same cell shows the same z every epoch.

    The model provides ``condition(batch)``, ``reconstruct(x, condition)``,
    ``prior_sample(n, generator)`` and ``generate(**prior)`` (see
    :class:`~vae_zoo.models.base.ELBOModule`). Images are made on rank zero only; no collective
    op runs here, so other ranks never wait on it.
    """

    def __init__(
        self, dirpath: str, every_n_epochs: int = 1, num_images: int = 32, nrow: int = 8, seed: int = 0
    ):
        self.dirpath = Path(dirpath)
        self.every_n_epochs, self.num_images, self.nrow, self.seed = every_n_epochs, num_images, nrow, seed
        self.inputs: dict[str, Tensor] | None = None
        self.prior: dict[str, Tensor] | None = None
        self.written: list[Path] = []

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # Keep the first validation batch seen (validation is not shuffled): a fixed set.
        if self.inputs is None and batch_idx == 0:
            self.inputs = {k: v[: self.num_images].detach().clone() for k, v in batch.items()}

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.inputs is None:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        if self.prior is None:
            generator = torch.Generator().manual_seed(self.seed)
            self.prior = pl_module.prior_sample(self.num_images, generator)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        epoch = trainer.current_epoch
        was_training = pl_module.training
        pl_module.eval()
        batch = {k: v.to(pl_module.device) for k, v in self.inputs.items()}
        recon = pl_module.reconstruct(batch["image"], pl_module.condition(batch))
        samples = pl_module.generate(**self.prior)
        pl_module.train(was_training)
        self._save(interleave_rows(batch["image"], recon, self.nrow), f"recon_epoch{epoch:04d}.png")
        self._save(samples, f"samples_epoch{epoch:04d}.png")

    def _save(self, images: Tensor, name: str) -> None:
        path = self.dirpath / name
        save_image(images.float().cpu(), path, nrow=self.nrow, padding=2, pad_value=0.5)
        self.written.append(path)


def interleave_rows(top: Tensor, bottom: Tensor, nrow: int) -> Tensor:
    """Stack images so that each row of ``nrow`` from ``top`` is followed by the matching row
    from ``bottom`` (for ``make_grid``/``save_image`` with the same ``nrow``)."""
    rows = [torch.cat(pair) for pair in zip(top.split(nrow), bottom.split(nrow))]
    return torch.cat(rows)
