"""The shared ELBO LightningModule every variant builds on.

Contract:

* Units: every term is **nats per example** - summed over data dimensions and latent
  dimensions, averaged over the batch. ``bits/dim = nats / (D ln 2)`` with D = C*H*W.
* One step computes one :class:`ELBOTerms`: reconstruction NLL, KL per latent dimension as a
  ``(latent_dim,)`` tensor, total KL, the ELBO and the variant's weighted ``loss``.
* Denoising: a batch may carry ``target`` (the clean image) next to ``image`` (the corrupted
  input the encoder sees); p(x|z) then scores the target.
* ``val/elbo`` means the same (unweighted) thing for every variant, so runs compare on one chart.
* A variant overrides only what differs: :meth:`regulariser` (what it adds to the β-weighted
  ELBO, warmed up with the KL) or :meth:`objective` (how the terms are weighted; it sees the
  posterior, the sampled z and, on request, k importance samples), :meth:`condition`
  (what a conditional model is given), and for other posteriors :meth:`build_nets` /
  :meth:`encode` / :meth:`kl_per_example_dim` / :meth:`prior_sample` /
  :meth:`log_importance_weights`.
* One path to a likelihood: :meth:`log_importance_weights` gives log p(x, z_s) - log q(z_s|x)
  for k posterior samples, (B, k). The IWAE objective and the test NLL estimator
  (:mod:`vae_zoo.metrics.likelihood`) both use it, so a model that defines it gets both.
* What a model can do is declared once, in :attr:`ELBOModule.capabilities`
  (:class:`Capabilities`); callbacks, evaluation and the experiment ask that, never ``hasattr``.
* The KL weighting (β, warm-up, cyclical, free bits, capacity) is one
  :class:`~vae_zoo.blocks.schedules.KLSchedule`; a form the objective cannot honour is refused.

How it trains (steps, logging, clipping, the NaN watch, optimizers, checkpoint state) is
:class:`~vae_zoo.models.training.LightningTraining`, which this class inherits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from vae_zoo.blocks.likelihoods import DiagonalGaussian, Likelihood
from vae_zoo.blocks.schedules import KLSchedule
from vae_zoo.blocks.stats import LOG_2PI, repeat_batch, standard_normal_log_prob
from vae_zoo.errors import ConfigError
from vae_zoo.models.optimisation import OptimizerFactory, SchedulerFactory
from vae_zoo.models.terms import Capabilities, ELBOTerms, ImportanceSamples
from vae_zoo.models.training import LightningTraining
from vae_zoo.nets import nets_must_fit


class ELBOModule(LightningTraining):
    """A VAE with a diagonal Gaussian posterior, a N(0, I) prior and a configurable p(x|z).

    Args:
        encoder: factory ``encoder(in_channels=, image_size=, out_features=)``; the module asks
            for ``2 * latent_dim`` outputs (mean and log-variance).
        decoder: factory ``decoder(in_features=, out_channels=, image_size=)``.
        likelihood: the observation model p(x|z) (:mod:`vae_zoo.blocks.likelihoods`).
        latent_dim: size of z.
        image_channels, image_size: shape of the (square) images this model takes.
        optimizer: factory ``optimizer(params)`` (a ``_partial_`` config).
        lr_scheduler: optional factory ``lr_scheduler(optimizer)``.
        lr_scheduler_interval: ``"epoch"`` or ``"step"``.
        lr_scheduler_monitor: metric a ReduceLROnPlateau-style scheduler watches.
        kl_schedule: how the KL term is weighted over training (default: constant, the ELBO).
        condition_dim: size of the conditioning vector a conditional variant feeds to both
            nets (0 for unconditional models).
    """

    #: weight β on the KL term (the vanilla VAE's is 1; β-VAE sets its own).
    beta: float = 1.0
    #: what this model can do; a variant that differs declares its own.
    capabilities: Capabilities = Capabilities()
    #: the run this model was read from (:func:`vae_zoo.run.run_config.load_frozen_model`), else None
    loaded_from: Any = None
    #: the run of a frozen first stage this model builds on (a second stage), else None; the
    #: run folder names it in ``parent.json``
    parent: Any = None

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
        kl_schedule: KLSchedule | None = None,
        condition_dim: int = 0,
    ):
        super().__init__()
        self.save_plain_hyperparameters()
        if not (isinstance(latent_dim, int) and latent_dim >= 1):
            raise ConfigError(f"model.latent_dim must be a whole number >= 1, got {latent_dim!r}.")
        self.latent_dim = latent_dim
        self.image_shape = (image_channels, image_size, image_size)
        self.condition_dim = condition_dim
        self.likelihood = likelihood
        self.kl_schedule = kl_schedule if kl_schedule is not None else KLSchedule()
        self.kl_schedule.check_honoured(self.capabilities.kl_schedules, type(self).__name__)
        self.build_nets(encoder, decoder)
        self.set_up_training(optimizer, lr_scheduler, lr_scheduler_interval, lr_scheduler_monitor)

    def build_nets(self, encoder: Callable[..., nn.Module], decoder: Callable[..., nn.Module]) -> None:
        """Encoder to (mean, log-variance) of z; decoder from z to the parameters of p(x|z).
        A condition enters the encoder as extra constant image channels and the decoder as
        extra inputs."""
        channels, size, _ = self.image_shape
        with nets_must_fit(type(self).__name__, "a vector encoder/decoder (net=conv or net=mlp)"):
            self.encoder = encoder(
                in_channels=channels + self.condition_dim, image_size=size, out_features=2 * self.latent_dim
            )
            self.decoder = decoder(
                in_features=self.latent_dim + self.condition_dim,
                out_channels=self.likelihood.param_channels(channels),
                image_size=size,
            )

    # ----------------------------------------------------------------- the model
    @property
    def data_dim(self) -> int:
        """D = C * H * W, the number of data dimensions (for bits/dim)."""
        return math.prod(self.image_shape)

    def condition(self, batch: Mapping[str, Tensor]) -> Tensor | None:
        """What the model is conditioned on, from a batch (None: unconditional)."""
        return None

    def encode(self, x: Tensor, condition: Tensor | None = None) -> DiagonalGaussian:
        """q(z|x) for a batch of images."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return DiagonalGaussian(mu, logvar)

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """Parameters of p(x|z), image-shaped."""
        return self.decoder(z)

    def kl_per_example_dim(self, posterior: DiagonalGaussian) -> Tensor:
        """(B, latent_dim) KL(q(z|x) || N(0, I)) in closed form, nats."""
        return posterior.kl_to_standard_normal()

    def elbo_terms(self, x: Tensor, condition: Tensor | None = None, target: Tensor | None = None) -> ELBOTerms:
        """Evaluate the ELBO terms on a batch with one reparameterised sample per example.
        ``target`` is what p(x|z) scores (default ``x``; the clean image when denoising)."""
        posterior = self.encode(x, condition)
        z = posterior.rsample()
        x_params = self.decode(z, condition)

        def importance_samples(num_samples: int, stop_posterior_gradient: bool = False) -> ImportanceSamples:
            return self.log_importance_weights(
                x, num_samples, condition, target, posterior=posterior, stop_posterior_gradient=stop_posterior_gradient
            )

        return ELBOTerms(
            log_px_z=self.likelihood.log_prob(x if target is None else target, x_params),
            kl_per_example_dim=self.kl_per_example_dim(posterior),
            x_params=x_params,
            latent_mean=posterior.mu,
            posterior=posterior,
            z=z,
            importance_samples=importance_samples,
        )

    def log_importance_weights(
        self,
        x: Tensor,
        num_samples: int,
        condition: Tensor | None = None,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        posterior: DiagonalGaussian | None = None,
        stop_posterior_gradient: bool = False,
    ) -> ImportanceSamples:
        """Draw ``num_samples`` = k samples z_s ~ q(z|x) per example and weigh them:
        log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x), (B, k), nats.

        The one path to a likelihood: ``logsumexp_s log w_s - log k`` is the k-sample IWAE
        bound (Burda et al. 2016), the IWAE objective and the test NLL estimator
        (:func:`vae_zoo.metrics.importance_sampled_log_likelihood`) both call this, and a model
        with another posterior or prior (hierarchical, flows) overrides it to get both.

        Args:
            x: (B, C, H, W) model-ready images.
            num_samples: k >= 1.
            condition: what a conditional model is given.
            target: what p(x|z) scores (default ``x``; the clean image when denoising).
            generator: random generator for the noise (on x's device); None: the global one.
                Noise is drawn one (B, latent_dim) sample at a time, so the stream does not
                depend on how a caller chunks k.
            posterior: q(z|x) if already computed (default: encode ``x``).
            stop_posterior_gradient: evaluate log q(z_s|x) with the posterior's parameters
                detached, so the encoder's gradient flows through z_s only (needed by DReG,
                Tucker et al. 2019).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        posterior = self.encode(x, condition) if posterior is None else posterior
        # contiguous copies: the encoder's halves are strided views, slow to broadcast against
        mu, logvar = posterior.mu.contiguous(), posterior.logvar.contiguous()
        noise = torch.stack(
            [torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device) for _ in range(num_samples)]
        )
        z = mu + torch.exp(0.5 * logvar) * noise  # (k, B, latent_dim)
        if stop_posterior_gradient:
            log_q = DiagonalGaussian(mu.detach(), logvar.detach()).log_prob(z)  # (k, B)
        else:  # the same value from the noise that made z, without recomputing (z - mu) / std
            log_q = -0.5 * (noise.pow(2) + logvar + LOG_2PI).sum(dim=-1)  # (k, B)
        k, batch = num_samples, x.shape[0]
        flat_condition = None if condition is None else repeat_batch(condition, k)
        x_params = self.decode(z.reshape(k * batch, -1), flat_condition)
        log_px_z = self.likelihood.log_prob(repeat_batch(x if target is None else target, k), x_params).reshape(
            k, batch
        )
        return ImportanceSamples(log_weights=(log_px_z + standard_normal_log_prob(z) - log_q).t(), z=z)

    def objective(self, terms: ELBOTerms) -> Tensor:
        """The scalar to minimise, nats per example:

            recon + β·w(t)·KL + w(t)·regulariser

        with the KL part as :meth:`kl_penalty` weighs it (β, warm-up or cyclical w(t), free bits,
        or the capacity form) and the variant's :meth:`regulariser` ramped by the same w(t), so a
        new penalty is warmed up with the KL without writing it. A variant whose loss is not of
        this form (IWAE's bound, the VQ-VAEs') overrides this instead."""
        return terms.recon + self.kl_penalty(terms) + self.kl_schedule.weight() * self.regulariser(terms)

    def kl_penalty(self, terms: ELBOTerms) -> Tensor:
        """The KL part of the loss as weighted by β and the schedule at the current step."""
        return self.kl_schedule.kl_penalty(terms.kl_per_dim, beta=self.beta)

    def regulariser(self, terms: ELBOTerms) -> Tensor | float:
        """What a variant adds to the (β-weighted) ELBO's terms, unweighted by the schedule
        (FactorVAE: γ·TC; DIP-VAE: the covariance penalties); the vanilla VAE: nothing."""
        return 0.0

    def batch_terms(self, batch: Mapping[str, Tensor]) -> ELBOTerms:
        """The terms of a data batch, read the one way every stage and evaluation reads it: the
        encoder sees ``batch["image"]`` with the model's condition, and p(x|z) scores
        ``batch["target"]`` when the data is corrupted for denoising, else the image."""
        return self(batch["image"], self.condition(batch), batch.get("target"))

    def forward(self, x: Tensor, condition: Tensor | None = None, target: Tensor | None = None) -> ELBOTerms:
        terms = self.elbo_terms(x, condition, target)
        terms.loss = self.objective(terms)
        return terms

    @torch.no_grad()
    def latent_code(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """A deterministic latent code for each image: the posterior mean E_q[z|x]."""
        return self.encode(x, condition).mu

    @torch.no_grad()
    def decode_latent(self, code: Tensor, condition: Tensor | None = None) -> Tensor:
        """Images in [0, 1] for latent codes as :meth:`latent_code` gives them (or their
        interpolations and traversals)."""
        return self.generate(code, condition)

    def latent_layers(self) -> dict[str, range]:
        """Layer name -> its dimensions in z, for models with several stochastic layers (whose
        active units are then also logged per layer); a single-layer model: none."""
        return {}

    @property
    def traversal_dims(self) -> range:
        """The latent dimensions a traversal may vary (all of them; a hierarchy: its top layer)."""
        return range(self.latent_dim)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Mean of p(x|z) at the posterior mean of z: images in [0, 1]."""
        return self.decode_latent(self.latent_code(x, condition), condition)

    def prior_sample(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw the inputs of :meth:`generate` from the prior, on the CPU: z ~ N(0, I)."""
        return {"z": torch.randn(num_samples, self.latent_dim, generator=generator)}

    @torch.no_grad()
    def generate(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """Mean images of p(x|z) for the given latents, in [0, 1]."""
        condition = None if condition is None else condition.to(self.device)
        return self.likelihood.mean(self.decode(z.to(self.device), condition))

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Images decoded from ``num_samples`` prior draws, in [0, 1]."""
        return self.generate(**self.prior_sample(num_samples, generator))
