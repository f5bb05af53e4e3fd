"""Active units (Burda et al. 2016, "Importance Weighted Autoencoders", section 5.2).

A latent dimension u is active when A_u = Cov_x(E_{q(u|x)}[u]) > 0.01: its posterior mean
varies across the data. Written by hand: no library (torchmetrics included) has it. The same
statistic is logged every validation epoch as ``val/active_units`` by the model itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from vae_zoo.blocks.stats import ACTIVE_UNIT_THRESHOLD, ExampleMeans, variance_from_means
from vae_zoo.models.base import ELBOModule


@torch.no_grad()
def posterior_mean_variance(model: ELBOModule, batches: Iterable[Mapping[str, Tensor]]) -> Tensor:
    """A_u for each latent dimension: the variance over examples of E_q[z_u | x] (latent_dim,).

    ``batches`` yields model-ready batches (float images on the model's device).
    """
    was_training = model.training
    model.eval()
    moments = ExampleMeans({"mean": (model.latent_dim,), "mean_sq": (model.latent_dim,)}).to(model.device)
    for batch in batches:
        mean = model.latent_code(batch["image"], model.condition(batch))  # E_q[z|x] (a hierarchy: every layer)
        moments.update({"mean": mean, "mean_sq": mean.pow(2)})
    model.train(was_training)
    result = moments.compute()
    if result["count"] < 2:
        raise ValueError("Active units need at least two examples.")
    return variance_from_means(result["mean"], result["mean_sq"], result["count"])


def active_units(
    model: ELBOModule, batches: Iterable[Mapping[str, Tensor]], threshold: float = ACTIVE_UNIT_THRESHOLD
) -> int:
    """Number of latent dimensions with A_u > ``threshold``."""
    return int((posterior_mean_variance(model, batches) > threshold).sum())
