"""An MMD-VAE (InfoVAE, Zhao et al. 2019): the ELBO plus a maximum mean discrepancy between the
aggregate posterior q(z) and the prior p(z), which pulls q(z) onto the prior without asking
every q(z|x) to match it. Train it with PYTHONPATH=docs/examples python -m vae_zoo.train
model._target_=mmd_vae.MMDVAE +model.mmd_weight=100 (evaluate it with trusted_targets=[mmd_vae])."""

import torch
from torch import Tensor

from vae_zoo.models.base import ELBOModule, ELBOTerms


def mmd(a: Tensor, b: Tensor) -> Tensor:
    """Squared MMD between two samples with a Gaussian kernel of width sqrt(latent_dim)."""

    def kernel(x: Tensor, y: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(x, y).pow(2) / x.shape[1]).mean()

    return kernel(a, a) + kernel(b, b) - 2 * kernel(a, b)


class MMDVAE(ELBOModule):
    """recon + KL + λ · MMD(q(z), N(0, I)), nats per example; logs ``<stage>/mmd``."""

    def __init__(self, *args, mmd_weight: float = 100.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.mmd_weight = mmd_weight

    def objective(self, terms: ELBOTerms) -> Tensor:
        divergence = mmd(terms.z, torch.randn_like(terms.z))
        terms.extras["mmd"] = divergence.detach()
        return terms.recon + self.kl_penalty(terms) + self.mmd_weight * divergence
