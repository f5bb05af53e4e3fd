"""What one step of a model produces and what a model can do: the data the base and the
objectives exchange (:class:`ELBOTerms`, :class:`ImportanceSamples`) and the declaration the
callbacks, evaluation and experiment read (:class:`Capabilities`). Units: nats per example."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from vae_zoo.blocks.likelihoods import DiagonalGaussian
from vae_zoo.blocks.schedules import KL_SCHEDULE_FORMS


@dataclass(frozen=True)
class Capabilities:
    """What a model can do, declared on its class (``capabilities = Capabilities(...)``).

    Attributes:
        gaussian_posterior: q(z|x) is a diagonal Gaussian with a density (KL per dimension,
            active units, traversals, importance sampling); False for VQ-VAE's categorical one.
        importance_weights: :meth:`ELBOModule.log_importance_weights` applies (q(z|x) has a
            density), so the IWAE bound and the importance-sampled test NLL exist.
        codebook: the model has a vector-quantiser codebook (``model.quantizer``).
        conditional: the model reads a condition from each batch (``model.label_key``,
            ``model.encoding``, ``model.num_classes``).
        stochastic_layers: how many layers of latent variables (1 for a single-layer VAE).
        learned_prior: the prior over the latents is a learned model of its own, fitted over a
            frozen first stage (:class:`~vae_zoo.models.LearnedPriorVQVAE`), not N(0, I) or uniform.
        manual_optimization: the model steps its own optimizers (e.g. FactorVAE's
            discriminator); the experiment then hands it the trainer's gradient clipping.
        kl_schedules: the forms of ``model.kl_schedule`` (:data:`~vae_zoo.blocks.schedules.KL_SCHEDULE_FORMS`)
            the objective honours; a model given another is refused at build, so that no schedule
            is logged that the loss did not use (IWAE's bound and the VQ-VAEs' objectives have no
            KL weight: none; β-TCVAE's decomposition: warm-up and cyclical only).
    """

    gaussian_posterior: bool = True
    importance_weights: bool = True
    codebook: bool = False
    conditional: bool = False
    stochastic_layers: int = 1
    learned_prior: bool = False
    manual_optimization: bool = False
    kl_schedules: tuple[str, ...] = KL_SCHEDULE_FORMS


@dataclass
class ImportanceSamples:
    """k posterior samples per example and their log importance weights.

    Attributes:
        log_weights: (B, k) log p(x, z_s) - log q(z_s|x), nats.
        z: (k, B, latent_dim) the reparameterised samples (differentiable in the posterior).
    """

    log_weights: Tensor
    z: Tensor


@dataclass
class ELBOTerms:
    """The result of one ELBO evaluation on a batch of B examples.

    Attributes:
        log_px_z: (B,) log p(x|z) for one posterior sample, nats per example.
        kl_per_example_dim: (B, latent_dim) KL(q(z|x) || p(z)) per latent dimension, nats.
        x_params: decoder output (the parameters of p(x|z)), image-shaped; None where the step
            did not decode (a learned prior trained on cached codes).
        loss: the scalar the optimiser minimises; set by the variant's ``objective``.
        extras: scalars a variant adds (VQ-VAE: codebook and commitment losses, perplexity,
            dead codes), logged as ``<stage>/<name>``.
        latent_mean: (B, latent_dim) posterior means E_q[z|x] (Gaussian posteriors), for
            active units and traversals.
        posterior: q(z|x) of the batch (Gaussian posteriors), for objectives that need it
            (β-TCVAE, DIP-VAE).
        z: (B, latent_dim) the reparameterised sample the decoder saw.
        importance_samples: ``terms.importance_samples(k)`` draws k more posterior samples of
            the same batch and weighs them (:meth:`ELBOModule.log_importance_weights`), for
            multi-sample objectives (IWAE); set by :meth:`ELBOModule.elbo_terms`.
    """

    log_px_z: Tensor
    kl_per_example_dim: Tensor
    x_params: Tensor | None
    loss: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    latent_mean: Tensor | None = None
    posterior: DiagonalGaussian | None = None
    z: Tensor | None = None
    importance_samples: Callable[..., ImportanceSamples] | None = None

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
