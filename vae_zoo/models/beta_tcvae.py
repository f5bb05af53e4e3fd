"""β-TCVAE (Chen et al. 2018): the KL split into index-code MI, total correlation and dimension-wise KL."""

import math
from typing import Any

import torch
from torch import Tensor

from vae_zoo.blocks.likelihoods import DiagonalGaussian
from vae_zoo.blocks.stats import LOG_2PI, standard_normal_log_prob
from vae_zoo.errors import ConfigError, check_non_negative
from vae_zoo.models.base import Capabilities, ELBOModule, ELBOTerms


class BetaTCVAE(ELBOModule):
    """Minimise

        recon + w(t)·(α·MI + β·TC + γ·DWKL),   with   MI + TC + DWKL = E[log q(z|x) − log p(z)],

    where, for z ~ q(z|x) and the aggregate posterior q(z) = E_x q(z|x),

        MI   = E[log q(z|x) − log q(z)]            (index-code mutual information)
        TC   = E[log q(z) − Σ_j log q(z_j)]        (total correlation)
        DWKL = E[Σ_j log q(z_j) − log p(z)]        (dimension-wise KL)

    in nats per example. The decomposition is the model's :meth:`regulariser` and stands in for
    the analytic KL, so the base's warm-up or cyclical w(t) ramps all three and ``train/beta``
    logs β·w(t), the weight on TC; free bits and the capacity form act on per-dimension KLs this
    loss does not have and are refused at build. log q(z) and log q(z_j) are estimated on the
    batch (size B, from a training set of N examples) in log space: minibatch-weighted sampling,
    log q(z_i) ≈ logsumexp_n log q(z_i|x_n) − log(N·B) (Chen et al., Appendix C.1), or stratified
    sampling (Chen et al., Appendix C.2: each row of weights sums to one). The three terms are
    logged as ``<stage>/mutual_information``, ``total_correlation`` and ``dimension_wise_kl``;
    ``val/elbo`` stays the analytic ELBO.

    Minibatch-weighted sampling as published gives each of the B examples the weight 1/(N·B),
    which sums to 1/N, not 1: where posteriors overlap, its log q(z) and each log q(z_j) read
    about log N low, so the logged MI, TC and DWKL carry offsets of order log N, d·log N (their
    sum is exact, and a constant offset leaves the gradient alone). Stratified sampling has no
    such offset (``tests/test_objectives.py`` checks both against a closed-form q(z)).

    Args:
        alpha, beta, gamma: weights of MI, TC and DWKL (the paper: 1, 6, 1).
        sampling: ``minibatch_weighted`` or ``stratified``.
        dataset_size: N, the number of training examples. ``null`` (the default): read from the
            datamodule's training split when a fit starts, and saved with the model; a model
            used outside a fit needs it set (an error says so).
        **kwargs: see :class:`~vae_zoo.models.base.ELBOModule`.
    """

    capabilities = Capabilities(kl_schedules=("warmup", "cyclical"))

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 6.0,
        gamma: float = 1.0,
        sampling: str = "minibatch_weighted",
        dataset_size: int | None = None,
        **kwargs: Any,
    ):
        if sampling not in ("minibatch_weighted", "stratified"):
            raise ConfigError(f"model.sampling must be minibatch_weighted or stratified, got {sampling!r}.")
        check_non_negative(alpha=alpha, beta=beta, gamma=gamma)
        if dataset_size is not None and not (isinstance(dataset_size, int) and dataset_size >= 1):
            raise ConfigError(f"model.dataset_size must be a whole number >= 1 or null, got {dataset_size!r}.")
        super().__init__(**kwargs)
        self.alpha, self.beta, self.gamma, self.sampling = alpha, beta, gamma, sampling
        self.register_buffer("dataset_size", torch.tensor(dataset_size or 0, dtype=torch.long))

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self.trainer is not None else None
        if stage == "fit" and datamodule is not None:  # Lightning has set the datamodule up first
            self.dataset_size.fill_(len(datamodule.splits["train"]["image"]))

    def kl_penalty(self, terms: ELBOTerms) -> Tensor:
        """None: the decomposition (the regulariser) stands in for the analytic KL."""
        return terms.recon.new_zeros(())

    def regulariser(self, terms: ELBOTerms) -> Tensor:
        mi, tc, dwkl = self.kl_decomposition(terms).values()
        terms.extras.update(
            mutual_information=mi.detach(), total_correlation=tc.detach(), dimension_wise_kl=dwkl.detach()
        )
        return self.alpha * mi + self.beta * tc + self.gamma * dwkl

    def kl_decomposition(self, terms: ELBOTerms) -> dict[str, Tensor]:
        """MI, TC and DWKL (batch means, nats) of the batch's posterior samples ``terms.z``."""
        z, posterior = terms.z, terms.posterior
        log_q_z, log_q_z_dims = self.aggregate_posterior_log_density(z, posterior)
        log_q_z_product = log_q_z_dims.sum(dim=1)
        return {
            "mutual_information": (posterior.log_prob(z) - log_q_z).mean(),
            "total_correlation": (log_q_z - log_q_z_product).mean(),
            "dimension_wise_kl": (log_q_z_product - standard_normal_log_prob(z)).mean(),
        }

    def aggregate_posterior_log_density(self, z: Tensor, posterior: DiagonalGaussian) -> tuple[Tensor, Tensor]:
        """The batch's estimates of log q(z_i) (B,) and of each marginal log q(z_ij) (B, d), nats, for
        z_i ~ q(z|x_i) and the batch's posteriors q(z|x_n): logsumexp_n of log w_in + log q(z_i|x_n)."""
        mu, logvar = posterior.mu, posterior.logvar
        # log q(z_i,j | x_n) for every sample i, example n and dimension j: (B, B, d)
        log_q_dims = -0.5 * ((z[:, None] - mu[None]).pow(2) * torch.exp(-logvar[None]) + logvar[None] + LOG_2PI)
        log_weights = self.log_importance_weights_matrix(z.shape[0], self.training_set_size(), z.device).to(z.dtype)
        log_q_z = torch.logsumexp(log_weights + log_q_dims.sum(dim=2), dim=1)
        log_q_z_dims = torch.logsumexp(log_weights[:, :, None] + log_q_dims, dim=1)
        return log_q_z, log_q_z_dims

    def training_set_size(self) -> int:
        """N; an error naming ``model.dataset_size`` when neither a fit nor the config gave it."""
        size = int(self.dataset_size)
        if size < 1:
            raise ConfigError(
                "β-TCVAE estimates q(z) from a batch and needs the training-set size N, which it reads from the "
                "datamodule when a fit starts. Outside a fit, set it: model.dataset_size=<N> in a config, "
                "BetaTCVAE(dataset_size=N, ...) in Python, or model.dataset_size.fill_(N)."
            )
        return size

    def log_importance_weights_matrix(self, batch: int, size: int, device: torch.device | None = None) -> Tensor:
        """(B, B) float64 log weight of example n (column) in the estimate of q(z_i) (row i, z_i drawn
        from q(z|x_i)): 1/(N·B) everywhere for minibatch-weighted sampling; for stratified
        sampling (Chen et al., Appendix C.2, with M = B − 1 the other examples of the batch)
        1/N on the diagonal (the sample's own example), (N − M)/(N·M) on one other entry per
        row and 1/M on the remaining M − 1, so that each row sums to one. Built on ``device`` (the
        batch's: no host-to-device copy per step)."""
        if self.sampling == "minibatch_weighted" or batch < 2:
            return torch.full((batch, batch), -math.log(size * batch), dtype=torch.float64, device=device)
        m = batch - 1
        if size <= m:
            raise ConfigError(
                f"Stratified sampling needs a training set larger than the batch's other examples (N = {size}, "
                f"B = {batch}): lower data.batch_size or use model.sampling=minibatch_weighted."
            )
        weights = torch.full((batch, batch), 1.0 / m, dtype=torch.float64, device=device)
        rows = torch.arange(batch, device=device)
        weights[rows, rows] = 1.0 / size
        weights[rows, (rows + 1) % batch] = (size - m) / (size * m)  # the stratified entry: the next example
        return weights.log()
