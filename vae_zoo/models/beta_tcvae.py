"""β-TCVAE (Chen et al. 2018): the KL split into index-code MI, total correlation and dimension-wise KL."""

import math
from typing import Any

import torch
from torch import Tensor

from vae_zoo.errors import ConfigError
from vae_zoo.models.base import ELBOModule, ELBOTerms
from vae_zoo.stats import LOG_2PI, standard_normal_log_prob


class BetaTCVAE(ELBOModule):
    """Minimise

        recon + α·MI + β·TC + γ·DWKL,   with   MI + TC + DWKL = E[log q(z|x) − log p(z)],

    where, for z ~ q(z|x) and the aggregate posterior q(z) = E_x q(z|x),

        MI   = E[log q(z|x) − log q(z)]            (index-code mutual information)
        TC   = E[log q(z) − Σ_j log q(z_j)]        (total correlation)
        DWKL = E[Σ_j log q(z_j) − log p(z)]        (dimension-wise KL)

    in nats per example. log q(z) and log q(z_j) are estimated on the batch (size B, from a
    training set of N examples) in log space: minibatch-weighted sampling,
    log q(z_i) ≈ logsumexp_n log q(z_i|x_n) − log(N·B), or stratified sampling (Chen et al.,
    Appendix C.2). A warm-up or cyclical ``kl_schedule`` scales the three weights together. The
    three terms are logged as ``<stage>/mutual_information``,
    ``total_correlation`` and ``dimension_wise_kl``; ``val/elbo`` stays the analytic ELBO.

    Args:
        alpha, beta, gamma: weights of MI, TC and DWKL (the paper: 1, 6, 1).
        sampling: ``minibatch_weighted`` or ``stratified``.
        **kwargs: see :class:`~vae_zoo.models.base.ELBOModule`. N comes from the datamodule's
            training split when training starts, and is saved with the model.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 6.0,
        gamma: float = 1.0,
        sampling: str = "minibatch_weighted",
        **kwargs: Any,
    ):
        if sampling not in ("minibatch_weighted", "stratified"):
            raise ConfigError(f"model.sampling must be minibatch_weighted or stratified, got {sampling!r}.")
        super().__init__(**kwargs)
        self.alpha, self.tc_weight, self.gamma, self.sampling = alpha, beta, gamma, sampling
        self.register_buffer("dataset_size", torch.tensor(0, dtype=torch.long))

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self.trainer is not None else None
        if stage == "fit" and datamodule is not None:  # Lightning has set the datamodule up first
            self.dataset_size.fill_(len(datamodule.splits["train"]["image"]))

    def objective(self, terms: ELBOTerms) -> Tensor:
        mi, tc, dwkl = self.kl_decomposition(terms).values()
        terms.extras.update(
            mutual_information=mi.detach(), total_correlation=tc.detach(), dimension_wise_kl=dwkl.detach()
        )
        warmup = self.kl_schedule.weight()  # a KL warm-up (kl_schedule=warmup) ramps all three
        return terms.recon + warmup * (self.alpha * mi + self.tc_weight * tc + self.gamma * dwkl)

    def kl_decomposition(self, terms: ELBOTerms) -> dict[str, Tensor]:
        """MI, TC and DWKL (batch means, nats) of the batch's posterior samples ``terms.z``."""
        z, mu, logvar = terms.z, terms.posterior.mu, terms.posterior.logvar
        batch = z.shape[0]
        size = int(self.dataset_size) or batch  # before training (a bare model): the batch itself
        # log q(z_i,j | x_n) for every sample i, example n and dimension j: (B, B, d)
        log_q_dims = -0.5 * ((z[:, None] - mu[None]).pow(2) * torch.exp(-logvar[None]) + logvar[None] + LOG_2PI)
        log_q_z_given_x = log_q_dims.diagonal(dim1=0, dim2=1).sum(dim=0)  # (B,): log q(z_i | x_i)
        log_weights = self._log_importance_weights(batch, size, z.device, z.dtype)  # (B, B)
        log_q_z = torch.logsumexp(log_weights + log_q_dims.sum(dim=2), dim=1)  # (B,)
        log_q_z_product = torch.logsumexp(log_weights[:, :, None] + log_q_dims, dim=1).sum(dim=1)  # (B,)
        log_p_z = standard_normal_log_prob(z)
        return {
            "mutual_information": (log_q_z_given_x - log_q_z).mean(),
            "total_correlation": (log_q_z - log_q_z_product).mean(),
            "dimension_wise_kl": (log_q_z_product - log_p_z).mean(),
        }

    def _log_importance_weights(self, batch: int, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(B, B) log weights of example n in the estimate of q(z_i): uniform 1/(N·B) for
        minibatch-weighted sampling; Chen et al.'s stratified weights otherwise."""
        if self.sampling == "minibatch_weighted" or batch < 2:
            return torch.full((batch, batch), -math.log(size * batch), device=device, dtype=dtype)
        m = batch - 1
        weights = torch.full((batch, batch), 1.0 / m, device=device, dtype=dtype)
        weights.view(-1)[:: m + 1] = 1.0 / size
        weights.view(-1)[1 :: m + 1] = (size - m) / (size * m)
        weights[m - 1, 0] = (size - m) / (size * m)
        return weights.log()
