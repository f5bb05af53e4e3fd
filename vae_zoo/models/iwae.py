"""Importance weighted autoencoder (Burda et al. 2016), optionally with DReG gradients (Tucker et al. 2019)."""

import math
from typing import Any

import torch
from torch import Tensor

from vae_zoo.errors import ConfigError
from vae_zoo.models.base import Capabilities, ELBOModule, ELBOTerms


class IWAE(ELBOModule):
    """Maximise the k-sample importance-weighted bound

        L_k(x) = E[ log (1/k) sum_s p(x, z_s) / q(z_s|x) ],   z_1..z_k ~ q(z|x),

    which is the ELBO at k = 1 and tightens towards log p(x) as k grows. Logged as
    ``<stage>/iwae_bound`` (nats per example); ``val/elbo`` stays the one-sample ELBO of every
    other variant.

    With ``dreg``, the encoder gets the doubly reparameterised gradient: log q is evaluated
    with the posterior's parameters held fixed, and the gradient through each z_s is weighted
    by its normalised weight w̃_s once more, giving sum_s w̃_s² ∂log w_s/∂z_s ∂z_s/∂φ, whose
    signal-to-noise ratio does not vanish as k grows; the decoder's gradient is IWAE's.

    Args:
        num_samples: k, importance samples per example (>= 1).
        dreg: use DReG gradients for the encoder.
        **kwargs: see :class:`~vae_zoo.models.base.ELBOModule`. The bound has no separate KL
            term to weight, so a ``kl_schedule`` other than constant is refused at build.
    """

    capabilities = Capabilities(kl_schedules=())

    def __init__(self, num_samples: int = 5, dreg: bool = False, **kwargs: Any):
        if num_samples < 1:
            raise ConfigError(f"model.num_samples (k) must be >= 1, got {num_samples}.")
        super().__init__(**kwargs)
        self.num_samples, self.dreg = num_samples, dreg

    def objective(self, terms: ELBOTerms) -> Tensor:
        samples = terms.importance_samples(self.num_samples, stop_posterior_gradient=self.dreg)
        log_w = samples.log_weights  # (B, k)
        bound = torch.logsumexp(log_w, dim=1) - math.log(self.num_samples)
        terms.extras["iwae_bound"] = bound.detach().mean()
        if not self.dreg:
            return -bound.mean()
        w = torch.softmax(log_w.detach(), dim=1)  # normalised weights w̃, (B, k)
        if samples.z.requires_grad:
            samples.z.register_hook(lambda grad: grad * w.t().unsqueeze(-1))
        return -(w * log_w).sum(dim=1).mean()  # its gradient: IWAE's for the decoder, DReG's for the encoder
