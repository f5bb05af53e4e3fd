"""The shared ELBO LightningModule every variant builds on.

Contract (see DESIGN.md):

* Units: every term is **nats per example** - summed over data dimensions and latent
  dimensions, averaged over the batch. ``bits/dim = nats / (D ln 2)`` with D = C*H*W.
* One step computes one :class:`ELBOTerms`: reconstruction NLL, KL per latent dimension as a
  ``(latent_dim,)`` tensor, total KL, the ELBO and the variant's weighted ``loss``.
* Stable log keys: ``train/loss``, ``train/elbo``, ``train/recon``, ``train/kl``,
  ``val/elbo``, ``val/recon``, ``val/kl``, ``val/loss``, ``val/bits_per_dim`` and
  ``val/kl_dim/<i>`` (likewise ``test/...``). ``val/elbo`` means the same (unweighted) thing
  for every variant, so runs compare on one chart.
* A variant overrides only what differs: :meth:`objective` (how the terms are weighted), and
  for other posteriors :meth:`encode` / :meth:`kl_per_example_dim`.

Logging never forces a host sync per step: values stay tensors on the device; Lightning
converts them at ``log_every_n_steps`` and at epoch end, and nothing per-step goes to the
progress bar (Lightning's progress bars call ``.item()`` on their metrics every batch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from vae_zoo.likelihoods import DiagonalGaussian, Likelihood

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


@dataclass
class ELBOTerms:
    """The result of one ELBO evaluation on a batch of B examples.

    Attributes:
        log_px_z: (B,) log p(x|z) for one posterior sample, nats per example.
        kl_per_example_dim: (B, latent_dim) KL(q(z|x) || p(z)) per latent dimension, nats.
        x_params: decoder output (the parameters of p(x|z)), image-shaped.
        loss: the scalar the optimiser minimises; set by the variant's ``objective``.
    """

    log_px_z: Tensor
    kl_per_example_dim: Tensor
    x_params: Tensor
    loss: Tensor | None = None

    @property
    def recon(self) -> Tensor:
        """Reconstruction NLL -E_q[log p(x|z)], nats per example (batch mean)."""
        return -self.log_px_z.mean()

    @property
    def kl_per_dim(self) -> Tensor:
        """(latent_dim,) KL per latent dimension, nats, batch mean."""
        return self.kl_per_example_dim.mean(dim=0)

    @property
    def kl(self) -> Tensor:
        """Total KL, nats per example (batch mean)."""
        return self.kl_per_dim.sum()

    @property
    def elbo(self) -> Tensor:
        """ELBO = E_q[log p(x|z)] - KL, nats per example (batch mean). Higher is better."""
        return -(self.recon + self.kl)

    @property
    def elbo_per_example(self) -> Tensor:
        """(B,) ELBO of each example, nats."""
        return self.log_px_z - self.kl_per_example_dim.sum(dim=1)


class ELBOModule(L.LightningModule):
    """A VAE with a diagonal Gaussian posterior, a N(0, I) prior and a configurable p(x|z).

    Args:
        encoder: factory ``encoder(in_channels=, image_size=, out_features=)``; the module asks
            for ``2 * latent_dim`` outputs (mean and log-variance).
        decoder: factory ``decoder(in_features=, out_channels=, image_size=)``.
        likelihood: the observation model p(x|z) (:mod:`vae_zoo.likelihoods`).
        latent_dim: size of z.
        image_channels, image_size: shape of the (square) images this model takes.
        optimizer: factory ``optimizer(params)`` (a ``_partial_`` config).
        lr_scheduler: optional factory ``lr_scheduler(optimizer)``.
        lr_scheduler_interval: ``"epoch"`` or ``"step"``.
        lr_scheduler_monitor: metric a ReduceLROnPlateau-style scheduler watches.
    """

    def __init__(
        self,
        encoder: Callable[..., nn.Module],
        decoder: Callable[..., nn.Module],
        likelihood: Likelihood,
        latent_dim: int,
        image_channels: int,
        image_size: int,
        optimizer: OptimizerFactory,
        lr_scheduler: SchedulerFactory | None = None,
        lr_scheduler_interval: str = "epoch",
        lr_scheduler_monitor: str = "val/loss",
    ):
        super().__init__()
        self.save_hyperparameters(
            ignore=["encoder", "decoder", "likelihood", "optimizer", "lr_scheduler"], logger=False
        )
        self.latent_dim = latent_dim
        self.image_shape = (image_channels, image_size, image_size)
        self.likelihood = likelihood
        self.encoder = encoder(
            in_channels=image_channels, image_size=image_size, out_features=2 * latent_dim
        )
        self.decoder = decoder(
            in_features=latent_dim,
            out_channels=likelihood.param_channels(image_channels),
            image_size=image_size,
        )
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.lr_scheduler_monitor = lr_scheduler_monitor

    # ----------------------------------------------------------------- the model
    @property
    def data_dim(self) -> int:
        """D = C * H * W, the number of data dimensions (for bits/dim)."""
        return math.prod(self.image_shape)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """q(z|x) for a batch of images."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return DiagonalGaussian(mu, logvar)

    def decode(self, z: Tensor) -> Tensor:
        """Parameters of p(x|z), image-shaped."""
        return self.decoder(z)

    def kl_per_example_dim(self, posterior: DiagonalGaussian) -> Tensor:
        """(B, latent_dim) KL(q(z|x) || N(0, I)) in closed form, nats."""
        return posterior.kl_to_standard_normal()

    def elbo_terms(self, x: Tensor) -> ELBOTerms:
        """Evaluate the ELBO terms on a batch with one reparameterised sample per example."""
        posterior = self.encode(x)
        x_params = self.decode(posterior.rsample())
        return ELBOTerms(
            log_px_z=self.likelihood.log_prob(x, x_params),
            kl_per_example_dim=self.kl_per_example_dim(posterior),
            x_params=x_params,
        )

    def objective(self, terms: ELBOTerms) -> Tensor:
        """The scalar to minimise (nats per example). Each variant states its own."""
        raise NotImplementedError(f"{type(self).__name__} must define objective(terms).")

    def forward(self, x: Tensor) -> ELBOTerms:
        terms = self.elbo_terms(x)
        terms.loss = self.objective(terms)
        return terms

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Mean of p(x|z) at z = E_q[z]: images in [0, 1]."""
        return self.likelihood.mean(self.decode(self.encode(x).mu))

    @torch.no_grad()
    def sample(self, num_samples: int = 0, z: Tensor | None = None) -> Tensor:
        """Mean images of p(x|z) for z ~ N(0, I) (or for the given ``z``), in [0, 1]."""
        if z is None:
            z = torch.randn(num_samples, self.latent_dim, device=self.device)
        return self.likelihood.mean(self.decode(z.to(self.device)))

    # ------------------------------------------------------------- Lightning steps
    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        terms = self(batch["image"])
        self._check_finite(terms.loss)
        self._log_terms("train", terms, batch_size=batch["image"].shape[0], per_dim=False)
        return terms.loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._log_terms("val", self(batch["image"]), batch_size=batch["image"].shape[0])

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._log_terms("test", self(batch["image"]), batch_size=batch["image"].shape[0])

    def _log_terms(self, stage: str, terms: ELBOTerms, batch_size: int, per_dim: bool = True) -> None:
        train = stage == "train"
        metrics = {
            f"{stage}/loss": terms.loss,
            f"{stage}/elbo": terms.elbo,
            f"{stage}/recon": terms.recon,
            f"{stage}/kl": terms.kl,
            f"{stage}/bits_per_dim": -terms.elbo / (self.data_dim * math.log(2)),
        }
        if per_dim:
            metrics.update({f"{stage}/kl_dim/{i}": kl for i, kl in enumerate(terms.kl_per_dim)})
        # Epoch values are means over examples (weighted by batch_size) and, under DDP,
        # averaged across ranks at epoch end only (sync_dist reduces once, not per step).
        for name, value in metrics.items():
            self.log(
                name,
                value.detach(),
                on_step=train,
                on_epoch=True,
                batch_size=batch_size,
                sync_dist=not train,
                prog_bar=name == "val/elbo",
            )

    def _check_finite(self, loss: Tensor) -> None:
        """Stop with a clear message on a NaN/inf loss, checked at the logging cadence only
        (a check every step would force a host sync)."""
        if self.trainer.global_step % max(self.trainer.log_every_n_steps, 1) != 0:
            return
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"The training loss became {loss.item()} at step {self.trainer.global_step}. "
                "Lower model.optimizer.lr, enable gradient clipping "
                "(trainer.gradient_clip_val=1.0), or check the data scaling for the likelihood."
            )

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.lr_scheduler_factory(optimizer),
                "interval": self.lr_scheduler_interval,
                "monitor": self.lr_scheduler_monitor,
            },
        }
