"""Out-of-distribution (anomaly) detection from per-example scores: AUROC and AUPRC.

A likelihood model flags an input as anomalous when its score - the negative ELBO or the
importance-sampled NLL, in nats per example - is high. How well the score separates
in-distribution (ID) from out-of-distribution (OOD) examples is summarised, as in Hendrycks &
Gimpel 2017 ("A Baseline for Detecting Misclassified and Out-of-Distribution Examples") and
Nalisnick et al. 2019 ("Do Deep Generative Models Know What They Don't Know?"), by

* AUROC: the area under the ROC curve, the probability that a random OOD example scores
  higher than a random ID example (ties count one half); 0.5 is chance, 1.0 perfect.
* AUPRC: the area under the precision-recall curve with OOD as the positive class, computed as
  average precision (sum_n (R_n - R_{n-1}) P_n, no interpolation); chance is the OOD fraction.

Both come from ``torchmetrics.functional`` (exact, unbinned: ``thresholds=None``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from vae_zoo.models.base import ELBOModule


@dataclass(frozen=True)
class OODDetectionScores:
    """How well a score separates OOD (positive) from ID examples.

    Attributes:
        auroc: area under the ROC curve, in [0, 1] (0.5 = chance).
        auprc: average precision with OOD as the positive class, in [0, 1] (chance =
            ``num_out_of_distribution / (num_in_distribution + num_out_of_distribution)``).
        num_in_distribution, num_out_of_distribution: how many examples of each were scored.
    """

    auroc: float
    auprc: float
    num_in_distribution: int
    num_out_of_distribution: int


def _tie_preserving_ranks(scores: Tensor) -> Tensor:
    """Map scores to [0, 1] by their rank among the distinct values, keeping order and ties.

    torchmetrics treats float predictions outside [0, 1] as logits and applies a sigmoid, which
    in float32 maps every score above ~17 (any NLL in nats of a real image) to exactly 1.0 and
    so merges them into one tie. Both metrics depend only on the order of the scores, so
    replacing each score by its dense rank / (number of distinct values - 1) changes nothing
    else.
    """
    distinct, rank = torch.unique(scores, sorted=True, return_inverse=True)
    return rank.double() / max(distinct.numel() - 1, 1)


def ood_detection_scores(in_distribution_scores: Tensor, out_of_distribution_scores: Tensor) -> OODDetectionScores:
    """AUROC and AUPRC of anomaly scores, OOD as the positive class.

    Args:
        in_distribution_scores: (N_in,) float scores of ID examples, higher = more anomalous
            (e.g. negative ELBO in nats, :func:`negative_elbo_scores`).
        out_of_distribution_scores: (N_out,) float scores of OOD examples, same scale.

    Returns:
        :class:`OODDetectionScores`.

    Raises:
        ValueError: if either set is empty or a score is NaN.
    """
    scores_in = torch.as_tensor(in_distribution_scores).detach().flatten().double().cpu()
    scores_out = torch.as_tensor(out_of_distribution_scores).detach().flatten().double().cpu()
    if scores_in.numel() == 0 or scores_out.numel() == 0:
        raise ValueError(f"Need in- and out-of-distribution scores, got {scores_in.numel()} and {scores_out.numel()}.")
    scores = torch.cat([scores_in, scores_out])
    if torch.isnan(scores).any():
        raise ValueError("Anomaly scores contain NaN; check the model's ELBO on these inputs.")
    is_out_of_distribution = torch.cat(
        [torch.zeros(scores_in.numel(), dtype=torch.long), torch.ones(scores_out.numel(), dtype=torch.long)]
    )
    predictions = _tie_preserving_ranks(scores)
    return OODDetectionScores(
        auroc=float(binary_auroc(predictions, is_out_of_distribution, thresholds=None)),
        auprc=float(binary_average_precision(predictions, is_out_of_distribution, thresholds=None)),
        num_in_distribution=scores_in.numel(),
        num_out_of_distribution=scores_out.numel(),
    )


@torch.no_grad()
def negative_elbo_scores(model: ELBOModule, batches: Iterable[Mapping[str, Tensor]], num_samples: int = 1) -> Tensor:
    """Per-example negative ELBO, an anomaly score in nats (higher = less likely under the model).

    Args:
        model: any :class:`~vae_zoo.models.base.ELBOModule` (VQ-VAE included: its ELBO has the
            constant KL log K per latent position).
        batches: yields model-ready batches (``batch["image"]`` float on the model's device,
            plus what ``model.condition(batch)`` reads).
        num_samples: posterior samples averaged per example (the ELBO's expectation over q is
            estimated by their mean; 1 is the usual single-sample estimate). Random draws come
            from torch's global generator.

    Returns:
        (N,) -ELBO(x) in nats for the N examples, in the order the batches gave them, float32
        on the CPU. For a tighter score use ``-importance_sampled_log_likelihoods(...)``
        (:mod:`vae_zoo.metrics.likelihood`).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    was_training = model.training
    model.eval()
    try:
        per_batch = []
        for batch in batches:
            elbo = sum(model.batch_terms(batch).elbo_per_example for _ in range(num_samples)) / num_samples
            per_batch.append(-elbo.float().cpu())
    finally:
        model.train(was_training)
    if not per_batch:
        raise ValueError("No batches to score.")
    return torch.cat(per_batch)
