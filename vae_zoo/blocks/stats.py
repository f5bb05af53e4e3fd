"""Small statistics the models log and the metrics reuse: the lowest layer of vae_zoo.

Models, metrics and callbacks import from here, and this module imports nothing of vae_zoo,
so ``vae_zoo.models`` never imports ``vae_zoo.metrics`` (whose FID pulls in torch-fidelity).

**Means over examples that stay exact across DDP ranks** (:class:`ExampleMeans`). Lightning's ``self.log(..., sync_dist=True)`` averages each rank's mean, which is not the mean
over examples when ranks hold different numbers of them, and it cannot reduce a vector such
as the KL per latent dimension. This torchmetrics ``Metric`` keeps per-key sums and one example
count, which torchmetrics all-reduces (sum) at ``compute`` - once per epoch, not per step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor
from torchmetrics import Metric

from vae_zoo.errors import ConfigError

#: log(2 pi), for Gaussian log densities.
LOG_2PI = math.log(2.0 * math.pi)

#: Burda et al.'s (2016) threshold on Cov_x(E_q[z_u]) for a latent dimension to count as active.
ACTIVE_UNIT_THRESHOLD = 0.01

# The names every model logs, ``<stage>/<name>`` for stage train, val and test (nats per example,
# bits/dim, a count). The base logs under these names and the W&B dashboard (vae_zoo/evaluation/dashboard.py)
# builds its panels from them, so a renamed metric renames its panel.
#: The ELBO's terms: the training objective, the ELBO, -E_q[log p(x|z)] and KL(q(z|x) || p(z)).
ELBO_TERMS = ("loss", "elbo", "recon", "kl")
BITS_PER_DIM = "bits_per_dim"
ACTIVE_UNITS = "active_units"
#: The KL of latent dimension i alone: ``<stage>/kl_dim/<i>``.
KL_PER_DIM = "kl_dim"


def metric_key(stage: str, name: str, dim: int | None = None) -> str:
    """The log key of a metric: ``val/elbo``, or ``val/kl_dim/3`` with ``dim``."""
    return f"{stage}/{name}" if dim is None else f"{stage}/{name}/{dim}"


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension: (..., latent_dim) -> (...), nats."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(dim=-1)


def bits_per_dim(nll_nats: Tensor | float, data_dim: int) -> Tensor | float:
    """Convert a negative log-likelihood in nats per example to bits per data dimension.

    Args:
        nll_nats: NLL (or negative ELBO) in nats per example, a float or a tensor of them.
        data_dim: D = C * H * W, the number of data dimensions of one example
            (``model.data_dim``).

    Returns:
        nll_nats / (D ln 2), of the same type as ``nll_nats``.
    """
    if data_dim < 1:
        raise ValueError(f"data_dim must be >= 1, got {data_dim}.")
    return nll_nats / (data_dim * math.log(2.0))


class ExampleMeans(Metric):
    """Running means over examples of several per-example quantities.

    Args:
        shapes: name -> shape of one example's value (``()`` for a scalar, ``(latent_dim,)``
            for a vector). Sums are kept in float64.

    ``update(values)`` takes name -> (B, *shape) per-example tensors (all with the same B);
    ``compute()`` returns name -> mean over every example seen on every rank.
    """

    full_state_update = False

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]):
        super().__init__()
        self.names = tuple(shapes)
        for name, shape in shapes.items():
            self.add_state(self._state(name), default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    @staticmethod
    def _state(name: str) -> str:
        return "sum_" + name.replace("/", "__")

    def update(self, values: Mapping[str, Tensor]) -> None:
        batch = None
        for name in self.names:
            value = values[name].detach().double()
            batch = value.shape[0] if batch is None else batch
            if value.shape[0] != batch:
                raise ValueError(f"{name} has {value.shape[0]} examples, expected {batch}.")
            setattr(self, self._state(name), getattr(self, self._state(name)) + value.sum(dim=0))
        self.count += batch

    def compute(self) -> dict[str, Tensor]:
        """name -> mean over all examples (float32), plus ``count``, the number of examples."""
        means = {name: (getattr(self, self._state(name)) / self.count).float() for name in self.names}
        return {**means, "count": self.count.clone()}


def repeat_batch(t: Tensor, times: int) -> Tensor:
    """(B, ...) -> (times * B, ...), the whole batch repeated ``times`` times (sample-major)."""
    return t.unsqueeze(0).expand(times, *t.shape).reshape(times * t.shape[0], *t.shape[1:])


def variance_from_means(mean: Tensor, mean_of_squares: Tensor, count: Tensor | float) -> Tensor:
    """Unbiased variance from E[x] and E[x^2] over ``count`` examples."""
    return (mean_of_squares - mean.pow(2)) * count / (count - 1)


def active_unit_mask(means: Mapping[str, Tensor]) -> Tensor:
    """(latent_dim,) which latent dimensions are active, Cov_x(E[z|x]) > :data:`ACTIVE_UNIT_THRESHOLD`
    (Burda et al. 2016), from a model's epoch means (``latent_mean``, ``latent_mean_sq``, ``count``)."""
    variance = variance_from_means(means["latent_mean"], means["latent_mean_sq"], means["count"])
    return variance > ACTIVE_UNIT_THRESHOLD


def optimized_value(metrics: dict[str, float], name: str) -> float:
    """The value a sweeper optimises (``optimized_metric``, e.g. ``val/elbo``) among a run's
    logged ``metrics``; a name that was never logged is a config error."""
    if name not in metrics:
        raise ConfigError(
            f"optimized_metric={name} was not logged by this run. Logged metrics: {', '.join(sorted(metrics))}."
        )
    return metrics[name]
