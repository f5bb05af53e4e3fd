"""Observation models p(x|z) and the Gaussian posterior q(z|x) with its closed-form KL.

Units: every ``log_prob`` returns **nats per example**, summed over all data dimensions
(channels x height x width). Nothing here averages over pixels: a per-pixel mean mixed with a
per-example KL silently re-weights the KL by 1/D (a known bug in popular VAE repositories).

The decoder outputs the *parameters* of p(x|z) as an image-shaped tensor; a likelihood says
how many channels it needs (:meth:`Likelihood.param_channels`) and how to score, display and
sample from them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_zoo.errors import ConfigError

# log-variances are clamped to this range before ``exp``: e^20 ~ 5e8 and e^-30 ~ 1e-13 keep
# the KL and the reparameterised sample finite in float32 whatever the encoder outputs.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def _sum_over_data_dims(t: Tensor) -> Tensor:
    """Sum every dimension but the first (batch): (B, ...) -> (B,)."""
    return t.flatten(start_dim=1).sum(dim=1)


class Likelihood(nn.Module):
    """A family p(x | params) whose parameters the decoder predicts."""

    def param_channels(self, channels: int) -> int:
        """Decoder output channels needed for images with ``channels`` channels."""
        return channels

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | params), summed over data dimensions: (B,) nats per example."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """E[x | params], an image in [0, 1] for display."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Independent Bernoulli per pixel, parameterised by logits (binary or [0, 1] data).

    Uses ``binary_cross_entropy_with_logits``, which is stable for large logits, unlike
    ``log(sigmoid(.))``. For grey values in (0, 1) this is the "continuous Bernoulli without
    its normaliser", the usual choice for MNIST; for binarized data it is an exact likelihood.
    """

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        bce = F.binary_cross_entropy_with_logits(params, x, reduction="none")
        return -_sum_over_data_dims(bce)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)


class Gaussian(Likelihood):
    """Independent Gaussian per pixel with mean from the decoder and a shared scale.

    Args:
        sigma: the standard deviation (in pixel units of [0, 1] data). Fixed unless
            ``learn_sigma``.
        learn_sigma: learn one log-sigma per channel, initialised at ``log(sigma)``
            (Rybkin et al. 2021 show this calibrates the reconstruction/KL balance).
        channels: number of image channels (size of the learned scale).

    The density is on continuous pixel values, so ``log_prob`` can be positive; it is
    comparable across runs only with the same data scaling.
    """

    def __init__(self, sigma: float = 0.1, learn_sigma: bool = False, channels: int = 1):
        super().__init__()
        if sigma <= 0:
            raise ConfigError(f"Gaussian likelihood needs sigma > 0, got likelihood.sigma={sigma}.")
        log_sigma = torch.full((channels, 1, 1), math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        log_sigma = self.log_sigma.expand_as(params)
        z = (x - params) * torch.exp(-log_sigma)
        log_density = -0.5 * z.pow(2) - log_sigma - 0.5 * math.log(2 * math.pi)
        return _sum_over_data_dims(log_density)

    def mean(self, params: Tensor) -> Tensor:
        return params.clamp(0.0, 1.0)


class DiagonalGaussian:
    """q(z|x) = N(mu, diag(exp(logvar))), with the reparameterised sample and the KL to N(0, I).

    Args:
        mu, logvar: (B, latent_dim). ``logvar`` is clamped to [LOGVAR_MIN, LOGVAR_MAX].
    """

    def __init__(self, mu: Tensor, logvar: Tensor):
        self.mu = mu
        self.logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self) -> Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): differentiable in mu and logvar."""
        return self.mu + self.std * torch.randn_like(self.mu)

    def kl_to_standard_normal(self) -> Tensor:
        """KL(q || N(0, I)) per example and latent dimension, (B, latent_dim), in nats.

        Closed form: 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2).
        """
        return 0.5 * (self.mu.pow(2) + torch.exp(self.logvar) - 1.0 - self.logvar)

    def kl_to(self, other: DiagonalGaussian) -> Tensor:
        """KL(self || other) per example and latent dimension, (B, latent_dim), in nats.

        Closed form: 0.5 * (log s_o^2 - log s^2 + (s^2 + (mu - mu_o)^2) / s_o^2 - 1)."""
        return 0.5 * (
            other.logvar
            - self.logvar
            + (torch.exp(self.logvar) + (self.mu - other.mu).pow(2)) * torch.exp(-other.logvar)
            - 1.0
        )

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over latent dimensions: (B,) nats."""
        return -0.5 * ((z - self.mu).pow(2) * torch.exp(-self.logvar) + self.logvar + math.log(2 * math.pi)).sum(dim=-1)
