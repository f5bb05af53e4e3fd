"""DIP-VAE (Kumar et al. 2018): a VAE that pushes the aggregate posterior's covariance to the identity."""

from typing import Any

import torch
from torch import Tensor

from vae_zoo.errors import ConfigError, check_non_negative
from vae_zoo.models.base import ELBOModule, ELBOTerms


class DIPVAE(ELBOModule):
    """Minimise

        recon + KL + λ_od Σ_{i≠j} Cov_ij² + λ_d Σ_i (Cov_ii − 1)²

    in nats per example, where Cov is the covariance of q(z) = E_x q(z|x) estimated on the
    batch: Cov_x[μ(x)] for type ``i`` (DIP-VAE-I), Cov_x[μ(x)] + E_x[diag σ²(x)] for type ``ii``
    (the full covariance of q(z), DIP-VAE-II). The penalty is the model's :meth:`regulariser`: a
    warm-up ``kl_schedule`` ramps it with the KL. The penalties are logged as
    ``<stage>/dip_off_diagonal`` and ``<stage>/dip_diagonal`` (unweighted).

    Args:
        dip_type: ``i`` or ``ii``.
        lambda_od: weight of the off-diagonal penalty.
        lambda_d: weight of the diagonal penalty (the paper: 10·λ_od for type i, λ_od for ii).
        **kwargs: see :class:`~vae_zoo.models.base.ELBOModule`.
    """

    def __init__(self, dip_type: str = "i", lambda_od: float = 10.0, lambda_d: float = 100.0, **kwargs: Any):
        if dip_type not in ("i", "ii"):
            raise ConfigError(f"model.dip_type must be i or ii, got {dip_type!r}.")
        check_non_negative(lambda_od=lambda_od, lambda_d=lambda_d)
        super().__init__(**kwargs)
        self.dip_type, self.lambda_od, self.lambda_d = dip_type, lambda_od, lambda_d

    def regulariser(self, terms: ELBOTerms) -> Tensor:
        mu = terms.posterior.mu
        covariance = torch.cov(mu.t())  # Cov_x[μ(x)], (d, d)
        if self.dip_type == "ii":
            covariance = covariance + torch.diag(terms.posterior.logvar.exp().mean(dim=0))
        diagonal = torch.diagonal(covariance)
        off_diagonal = (covariance - torch.diag(diagonal)).pow(2).sum()
        on_diagonal = (diagonal - 1.0).pow(2).sum()
        terms.extras.update(dip_off_diagonal=off_diagonal.detach(), dip_diagonal=on_diagonal.detach())
        return self.lambda_od * off_diagonal + self.lambda_d * on_diagonal
