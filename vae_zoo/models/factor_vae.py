"""FactorVAE (Kim & Mnih 2018): a VAE penalised by a discriminator's estimate of total correlation."""

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_zoo.errors import ConfigError, check_non_negative
from vae_zoo.models.base import Capabilities, ELBOModule, ELBOTerms
from vae_zoo.models.optimisation import OptimizerFactory, plain_arguments


def permute_dims(z: Tensor) -> Tensor:
    """Shuffle each latent dimension independently across the batch: samples of Π_j q(z_j)."""
    return torch.stack([column[torch.randperm(len(column), device=z.device)] for column in z.t()], dim=1)


class FactorVAE(ELBOModule):
    """Minimise, for the VAE,

        recon + KL + γ·TC,   TC ≈ E_q(z)[log D(z) / (1 − D(z))],

    where the discriminator D tells samples of q(z) from samples of Π_j q(z_j) (the batch's z
    with each dimension permuted across examples) and is trained by its own optimizer to
    minimise the cross-entropy of that task. Both optimizers step every batch (Lightning's
    manual optimisation); the trainer's gradient clipping applies to the VAE's step. γ·TC is the
    model's :meth:`regulariser`: a warm-up ``kl_schedule`` ramps it with the KL weight. Logged:
    ``<stage>/tc_estimate`` (nats) and ``<stage>/discriminator_accuracy``.

    Args:
        gamma: the weight γ of the TC estimate (the paper: 6.4 on 2D shapes, 40 on 3D ones).
        discriminator_hidden: widths of the discriminator MLP's hidden layers (the paper:
            six layers of 1000).
        discriminator_optimizer: factory for D's optimizer (the paper: Adam, lr 1e-4,
            betas (0.5, 0.9)).
        **kwargs: see :class:`~vae_zoo.models.base.ELBOModule`; ``optimizer`` is the VAE's.
    """

    capabilities = Capabilities(manual_optimization=True)
    optimizer_steps_per_batch = 2  # the VAE's and the discriminator's: a warm-up counts batches, as for every variant

    def __init__(
        self,
        gamma: float = 6.4,
        discriminator_hidden: tuple[int, ...] = (1000, 1000, 1000),
        discriminator_optimizer: OptimizerFactory | None = None,
        **kwargs: Any,
    ):
        if kwargs.get("lr_scheduler") is not None:
            raise ConfigError("FactorVAE steps its two optimizers itself; model.lr_scheduler must be null for it.")
        check_non_negative(gamma=gamma)
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.gamma = gamma
        widths = [self.latent_dim, *discriminator_hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.LeakyReLU(0.2)]
        self.discriminator = nn.Sequential(*layers, nn.Linear(widths[-1], 2))  # logits: (q(z), Π q(z_j))
        self.discriminator_optimizer_factory: Callable[..., torch.optim.Optimizer] = plain_arguments(
            discriminator_optimizer
        ) or (lambda params: torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.9)))

    def regulariser(self, terms: ELBOTerms) -> Tensor:
        logits = self.discriminator(terms.z)
        tc_estimate = (logits[:, 0] - logits[:, 1]).mean()  # log D/(1-D) for a 2-way softmax
        terms.extras["tc_estimate"] = tc_estimate.detach()
        if not self.training:  # in training, the discriminator's own step measures its accuracy
            terms.extras["discriminator_accuracy"] = self.discriminator_terms(terms.z)[1]
        return self.gamma * tc_estimate

    def discriminator_terms(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy of telling z ~ q(z) (class 0) from permuted z ~ Π_j q(z_j) (class 1),
        and the discriminator's accuracy at it (detached)."""
        z = z.detach()
        joint, product = self.discriminator(z), self.discriminator(permute_dims(z))
        zeros = torch.zeros(len(z), dtype=torch.long, device=z.device)
        loss = 0.5 * (F.cross_entropy(joint, zeros) + F.cross_entropy(product, zeros + 1))
        correct = (joint.argmax(1) == 0).float().sum() + (product.argmax(1) == 1).float().sum()
        return loss, (correct / (2 * len(z))).detach()

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        vae_optimizer, discriminator_optimizer = self.optimizers()
        terms = self.batch_terms(batch)
        self._watch_finite(terms.loss)
        vae_optimizer.zero_grad()
        self.manual_backward(terms.loss)
        if self.gradient_clip is not None:
            self.clip_gradients(
                vae_optimizer, gradient_clip_val=self.gradient_clip[0], gradient_clip_algorithm=self.gradient_clip[1]
            )
        vae_optimizer.step()
        discriminator_loss, accuracy = self.discriminator_terms(terms.z)
        discriminator_optimizer.zero_grad()  # also drops what the VAE loss left on D's weights
        self.manual_backward(discriminator_loss)
        discriminator_optimizer.step()
        terms.extras.update(discriminator_loss=discriminator_loss.detach(), discriminator_accuracy=accuracy)
        self.log_training_step(terms, batch_size=batch["image"].shape[0])
        return terms.loss

    def configure_optimizers(self) -> Any:
        vae_parameters = [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]
        return [
            self.configure_optimizers_for(vae_parameters),
            self.discriminator_optimizer_factory(self.discriminator.parameters()),
        ]
