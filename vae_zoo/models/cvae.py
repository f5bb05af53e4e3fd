"""Conditional VAE (Sohn et al. 2015; Kingma et al. 2014, "M2" without the classifier)."""

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_zoo.blocks.likelihoods import DiagonalGaussian
from vae_zoo.errors import ConfigError
from vae_zoo.models.base import Capabilities, ELBOModule


class ConditionalVAE(ELBOModule):
    """Maximise the conditional ELBO

        E_q(z|x,y)[log p(x|z,y)] - KL(q(z|x,y) || N(0, I)),

    where the label y enters the encoder (as constant extra image channels) and the decoder
    (concatenated to z). Generation takes the labels to condition on.

    Args:
        num_classes: size of the condition vector: the number of classes (``one_hot``) or of
            binary attributes (``multi_hot``, e.g. CelebA's 40).
        label_key: batch key holding the labels (``label`` for MNIST classes and the sprites'
            shape; an attribute matrix for multi-hot).
        encoding: ``one_hot`` (integer class labels, shape (B,)) or ``multi_hot`` (0/1
            attribute vectors, shape (B, num_classes)).
        **kwargs: see :class:`~vae_zoo.models.base.ELBOModule`.
    """

    capabilities = Capabilities(conditional=True)

    def __init__(self, num_classes: int, label_key: str = "label", encoding: str = "one_hot", **kwargs: Any):
        if encoding not in ("one_hot", "multi_hot"):
            raise ConfigError(f"model.encoding must be one_hot or multi_hot, got {encoding!r}.")
        self.num_classes, self.label_key, self.encoding = num_classes, label_key, encoding
        super().__init__(condition_dim=num_classes, **kwargs)

    def condition(self, batch: Mapping[str, Tensor]) -> Tensor:
        if self.label_key not in batch:
            raise ConfigError(
                f"The conditional VAE needs labels under '{self.label_key}' in each batch, but "
                f"the data gives {sorted(batch)}. Use data with labels or set model.label_key."
            )
        return self.encode_labels(batch[self.label_key])

    def encode_labels(self, labels: Tensor) -> Tensor:
        """Class indices (B,) -> one-hot, or attribute vectors (B, K) -> float, (B, K)."""
        if self.encoding == "one_hot":
            return F.one_hot(labels.long(), self.num_classes).float()
        return labels.float()

    # No default for the condition: this model has no unconditional form, so leaving it out is an error
    # that says so (the base's methods pass it through from their callers).
    def encode(self, x: Tensor, condition: Tensor) -> DiagonalGaussian:
        label_planes = self.required(condition, "encode")[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return super().encode(torch.cat([x, label_planes], dim=1))

    def decode(self, z: Tensor, condition: Tensor) -> Tensor:
        return super().decode(torch.cat([z, self.required(condition, "decode")], dim=1))

    def required(self, condition: Tensor | None, method: str) -> Tensor:
        """The condition vector, or a TypeError naming what to pass when there is none."""
        if condition is None:
            raise TypeError(
                f"ConditionalVAE.{method} needs the condition, a (B, {self.num_classes}) tensor: pass "
                "model.encode_labels(labels) (or model.condition(batch)) as its second argument."
            )
        return condition

    def prior_sample(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """z ~ N(0, I) with labels cycling through the classes (one-hot), or random attribute
        vectors (multi-hot)."""
        prior = super().prior_sample(num_samples, generator)
        if self.encoding == "one_hot":
            labels = torch.arange(num_samples) % self.num_classes
        else:
            labels = torch.randint(0, 2, (num_samples, self.num_classes), generator=generator)
        prior["condition"] = self.encode_labels(labels)
        return prior

    def class_grid_sample(self, samples_per_class: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The same ``samples_per_class`` draws of z for every class in turn, with the class's label."""
        z = super().prior_sample(samples_per_class, generator)["z"]
        labels = torch.arange(self.num_classes).repeat_interleave(samples_per_class)
        return {"z": z.repeat(self.num_classes, 1), "condition": self.encode_labels(labels)}
