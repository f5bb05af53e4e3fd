"""Means over examples that stay exact across DDP ranks.

Lightning's ``self.log(..., sync_dist=True)`` averages each rank's mean, which is not the mean
over examples when ranks hold different numbers of them, and it cannot reduce a vector such
as the KL per latent dimension. This torchmetrics ``Metric`` keeps per-key sums and one example
count, which torchmetrics all-reduces (sum) at ``compute`` - once per epoch, not per step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torchmetrics import Metric


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


def variance_from_means(mean: Tensor, mean_of_squares: Tensor, count: Tensor | float) -> Tensor:
    """Unbiased variance from E[x] and E[x^2] over ``count`` examples."""
    return (mean_of_squares - mean.pow(2)) * count / (count - 1)
