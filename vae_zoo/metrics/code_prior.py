"""How much a learned prior over a VQ-VAE's codes buys: the prior's NLL of the codes, and the
ELBO with the learned prior beside the ELBO with the uniform prior (the first stage's own)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from vae_zoo.blocks.stats import bits_per_dim
from vae_zoo.metrics.suite import EvaluationContext, EvaluationMetric

if TYPE_CHECKING:
    from vae_zoo.metrics.report import EvaluationReport


def _mean_and_standard_error(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()


class LearnedPriorLikelihood(EvaluationMetric):
    """For a model with a learned prior over codes (:class:`~vae_zoo.models.LearnedPriorVQVAE`):

    * ``code_nll``: -log p(c_i | c_<i) per code, nats and bits, averaged over the split's codes;
    * ``prior_nll``: -log p(c(x)), nats per example;
    * ``elbo_learned_prior`` = log p(x|c(x)) + log p(c(x)) and ``elbo_uniform_prior`` =
      log p(x|c(x)) - h·w·log K, nats per example and bits/dim, and their difference.

    Each with its standard error over the split's examples (std / sqrt(n)). The posterior puts
    all its mass on c(x), so these ELBOs are also the importance-sampled bounds for any k."""

    name = "learned_prior"

    def skip_reason(self, context: EvaluationContext) -> str | None:
        model = context.model
        return None if model.capabilities.learned_prior else f"{type(model).__name__} has no learned prior"

    @torch.no_grad()
    def compute(self, context: EvaluationContext, report: EvaluationReport) -> None:
        model = context.model
        prior_nll, log_px_z = [], []
        for batch in context.batches():
            terms = model.batch_terms(batch)
            prior_nll.append(terms.kl_per_example_dim.sum(dim=1).cpu())
            log_px_z.append(terms.log_px_z.cpu())
        prior_nll, log_px_z = torch.cat(prior_nll).double(), torch.cat(log_px_z).double()
        positions, num_codes = model.prior.num_positions, model.quantizer.num_codes
        count = len(prior_nll)
        on = {"num_examples": count}
        value, error = _mean_and_standard_error(prior_nll / positions)
        report.add("code_nll", value, "nats/code", standard_error=error, uniform=math.log(num_codes), **on)
        report.add("code_nll_bits", value / math.log(2), "bits/code", uniform=math.log2(num_codes), **on)
        value, error = _mean_and_standard_error(prior_nll)
        report.add("prior_nll", value, "nats/example", standard_error=error, positions=positions, **on)
        learned = log_px_z - prior_nll
        uniform = log_px_z - model.uniform_prior_kl
        for name, elbo in (("elbo_learned_prior", learned), ("elbo_uniform_prior", uniform)):
            value, error = _mean_and_standard_error(elbo)
            report.add(name, value, "nats/example", standard_error=error, **on)
            report.add(f"{name}_bits_per_dim", bits_per_dim(-value, model.data_dim), "bits/dim", **on)
        value, error = _mean_and_standard_error(learned - uniform)
        report.add(
            "elbo_gain_over_uniform", value, "nats/example", standard_error=error, note="paired, per example", **on
        )
