"""Test log-likelihood by importance sampling: the IWAE bound (Burda et al. 2016).

For a model with a Gaussian posterior q(z|x), a N(0, I) prior and a decoder p(x|z), the
importance-weighted bound with K samples is

    L_K(x) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x),

a stochastic lower bound on log p(x) in expectation: E[L_1] = ELBO <= E[L_K] <= E[L_{K+1}]
and L_K -> log p(x) as K -> infinity (Burda et al. 2016, "Importance Weighted Autoencoders",
Theorem 1). Papers report -L_K for K = 5000 (or 1000) as the "test NLL" (e.g. Burda et al.
2016, Table 1; Kingma et al. 2016 use the same estimator).

Written by hand: no maintained library (torchmetrics included) computes it; it needs the
model's own encoder, decoder and likelihood. Everything is in log space: the K log-weights are
combined with ``logsumexp``, and chunks of samples with a running ``logaddexp``, so any K
fits in memory (O(B * chunk_size) decoder inputs at a time) and nothing under- or overflows.

Units: nats per example (summed over all D = C*H*W data dimensions). ``bits/dim`` =
nats / (D ln 2), see :func:`bits_per_dim`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

from vae_zoo.blocks.stats import bits_per_dim
from vae_zoo.models.base import ELBOModule

__all__ = ["bits_per_dim", "importance_sampled_log_likelihood", "importance_sampled_log_likelihoods"]

#: The precisions the decoder may run in while estimating (see ``precision``).
PRECISIONS = ("32", "bf16")


@torch.inference_mode()  # no autograd records at all: a pure evaluation
def importance_sampled_log_likelihood(
    model: ELBOModule,
    x: Tensor,
    condition: Tensor | None = None,
    num_samples: int = 1000,
    chunk_size: int = 100,
    generator: torch.Generator | None = None,
    target: Tensor | None = None,
    progress: Callable[[int], None] | None = None,
    precision: str = "32",
) -> Tensor:
    """The IWAE estimate of log p(x) for each example, in nats.

    The log weights come from the model itself (:meth:`ELBOModule.log_importance_weights`),
    so this estimator knows nothing of its posterior or prior: any model that gives log
    weights gets a test NLL.

    Args:
        model: an :class:`~vae_zoo.models.base.ELBOModule` whose capabilities include
            ``importance_weights``.
        x: (B, C, H, W) model-ready images (float, on the model's device).
        condition: (B, condition_dim) what a conditional model is given (``model.condition(batch)``),
            or None.
        num_samples: K, the number of importance samples per example (>= 1). K = 1 gives a
            single-sample ELBO estimate.
        chunk_size: how many of the K samples are decoded at once; memory is
            O(B * chunk_size) decoder inputs and outputs. Does not change the result.
        generator: the random generator for the posterior samples (on x's device); None uses
            torch's global one.
        target: what p(x|z) scores (the clean image when denoising; default ``x``).
        progress: called with the number of decodes (examples x samples) after each chunk.
        precision: ``"32"``: every step in float32 (the default). ``"bf16"``: the decoder runs
            under bfloat16 autocast (matrix products and convolutions in bf16, on CPUs with AMX
            or AVX512-BF16 and on GPUs several times faster); the posterior, the draws and every
            log density stay float32. The same draws then give an estimate that differs from the
            float32 one by a few hundredths of a nat (BENCHMARKS.md), well inside its Monte Carlo
            error, but not bit for bit.

    Returns:
        (B,) L_K(x) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), in nats, in x's dtype.
        Negate it for the NLL; :func:`bits_per_dim` converts.

    Raises:
        ValueError: for a model without importance weights (VQ-VAE's deterministic categorical
            posterior has no density q(z|x) to weight by), or ``num_samples``/``chunk_size`` < 1.
    """
    if not model.capabilities.importance_weights:
        raise ValueError(
            f"Importance-sampled log-likelihood needs a posterior with a density q(z|x); "
            f"{type(model).__name__} has a deterministic categorical posterior, so there are no "
            "importance weights p(x|z)p(z)/q(z|x). Report its ELBO instead."
        )
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be >= 1, got {num_samples} and {chunk_size}.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    was_training = model.training
    model.eval()
    try:
        posterior = model.encode(x, condition)
        # log sum_k w_k over the chunks done so far, (B,); starts at log 0 = -inf
        log_sum_weights = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
        for start in range(0, num_samples, chunk_size):
            chunk = min(chunk_size, num_samples - start)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                log_weights = model.log_importance_weights(
                    x, chunk, condition, target, generator, posterior=posterior
                ).log_weights.to(x.dtype)
            log_sum_weights = torch.logaddexp(log_sum_weights, torch.logsumexp(log_weights, dim=1))
            if progress is not None:
                progress(chunk * x.shape[0])
        return log_sum_weights - math.log(num_samples)
    finally:
        model.train(was_training)


@torch.inference_mode()
def importance_sampled_log_likelihoods(
    model: ELBOModule,
    batches: Iterable[Mapping[str, Tensor]],
    num_samples: int = 1000,
    chunk_size: int = 100,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
    precision: str = "32",
) -> Tensor:
    """:func:`importance_sampled_log_likelihood` for every example of a dataset.

    Args:
        batches: yields model-ready batches (``batch["image"]`` float on the model's device,
            plus what ``model.condition(batch)`` reads).
        num_samples, chunk_size, generator, progress, precision: as in
            :func:`importance_sampled_log_likelihood`.

    Returns:
        (N,) L_K(x) in nats for the N examples, in the order the batches gave them, on the CPU.
        The test NLL is ``-result.mean()``.
    """
    per_batch = [
        importance_sampled_log_likelihood(
            model,
            batch["image"],
            model.condition(batch),
            num_samples,
            chunk_size,
            generator,
            batch.get("target"),
            progress,
            precision,
        ).cpu()
        for batch in batches
    ]
    if not per_batch:
        raise ValueError("No batches to evaluate the log-likelihood on.")
    return torch.cat(per_batch)
