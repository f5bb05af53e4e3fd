"""The second stage of a VQ-VAE (van den Oord et al. 2017, section 3.2): an autoregressive prior
p(c) over the grid of code indices of a frozen, trained VQ-VAE."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_zoo.errors import ConfigError
from vae_zoo.models.base import Capabilities, ELBOModule, ELBOTerms, ImportanceSamples
from vae_zoo.models.optimisation import OptimizerFactory
from vae_zoo.models.vq_vae import VQVAE

#: Batch keys of the training split's cached codes (filled in at the start of fit).
CODES, CODES_LOG_PX = "codes", "codes_log_px_z"


class LearnedPriorVQVAE(ELBOModule):
    """Minimise the prior's NLL of the frozen VQ-VAE's codes c(x):

        -log p(c(x)) = sum_i -log p(c_i | c_<i)   (nats per example).

    The posterior q(c|x) puts all its mass on the nearest codes c(x), so its KL to the prior
    is -log p(c(x)) (it has no entropy) and the ELBO with the learned prior is
    log p(x|c(x)) + log p(c(x)); the first stage is frozen, so its reconstruction term is a
    constant and the prior's NLL is the whole objective. With the uniform prior the same KL is
    h·w·log K: ``uniform_prior_elbo`` is logged beside, and the difference is what the prior
    learned. ``val/kl`` is the prior's NLL of the codes, ``val/code_nll`` the same per code.

    The training split's codes (and reconstruction terms) are computed once, at the start of
    fit, and served with the images in every batch: no training step runs the VQ-VAE. Under
    ``data.binarize=dynamic`` they are the codes of one fixed binarization of the training set
    (``datamodule.training_images_once``); validation and test sets are binarized once anyway.

    Args:
        first_stage: the trained VQ-VAE (``conf/model/vq_prior.yaml`` loads it from
            ``model.first_stage.path``, a run folder or checkpoint); frozen and kept in eval mode.
        prior: factory ``prior(num_codes=, grid_size=, num_classes=)``, e.g.
            :class:`~vae_zoo.nets.CodeTransformer`.
        optimizer: factory ``optimizer(params)``, over the prior's parameters only.
        conditional: condition the prior on the class label ``batch[label_key]``.
        num_classes: number of classes (conditional only).
        label_key: the batch key of the labels.
        **kwargs: ``lr_scheduler``, ``lr_scheduler_interval``, ``lr_scheduler_monitor`` and
            ``kl_schedule`` of :class:`~vae_zoo.models.base.ELBOModule` (a KL schedule does not
            apply: the objective is a likelihood).
    """

    encoding = "one_hot"  # labels are class indices: what check_compatible compares with the data

    def __init__(
        self,
        first_stage: nn.Module,
        prior: Callable[..., nn.Module],
        optimizer: OptimizerFactory,
        conditional: bool = False,
        num_classes: int | None = None,
        label_key: str = "label",
        **kwargs: Any,
    ):
        if not isinstance(first_stage, VQVAE):
            where = getattr(first_stage, "loaded_from", None)
            raise ConfigError(
                f"model.first_stage is a {type(first_stage).__name__}"
                + (f" (the run {where.run_dir})" if where is not None else "")
                + ", not a VQ-VAE: a learned prior models the code grid of a VQ-VAE. Train one with "
                "`python -m vae_zoo.train model=vq_vae data=...` and give its run folder as model.first_stage.path."
            )
        if conditional and not num_classes:
            raise ConfigError("model.conditional=true needs model.num_classes (e.g. ${data.num_classes}).")
        self.capabilities = Capabilities(
            gaussian_posterior=False,
            importance_weights=False,
            codebook=True,
            conditional=conditional,
            learned_prior=True,
            kl_schedules=(),  # the objective is the prior's likelihood: no KL weight to schedule
        )
        self.num_classes, self.label_key = num_classes, label_key
        channels, size, _ = first_stage.image_shape
        super().__init__(
            encoder=None,
            decoder=None,
            likelihood=first_stage.likelihood,
            latent_dim=first_stage.latent_dim,
            image_channels=channels,
            image_size=size,
            optimizer=optimizer,
            **kwargs,
        )
        self.first_stage = first_stage.requires_grad_(False).eval()
        self.parent = getattr(first_stage, "loaded_from", None)  # the run folder names it (parent.json)
        self.quantizer, self.grid_size = first_stage.quantizer, first_stage.grid_size
        self.prior = prior(
            num_codes=self.quantizer.num_codes, grid_size=self.grid_size, num_classes=num_classes if conditional else 0
        )

    def build_nets(self, encoder: Any, decoder: Any) -> None:
        """Nothing to build: the encoder and decoder are the first stage's."""

    def train(self, mode: bool = True) -> LearnedPriorVQVAE:
        """Train the prior only: the first stage stays in eval mode (no EMA codebook updates)."""
        super().train(mode)
        self.first_stage.eval()
        return self

    def configure_optimizers(self) -> Any:
        return self.configure_optimizers_for(self.prior.parameters())

    @property
    def uniform_prior_kl(self) -> float:
        """h·w·log K nats: the KL of the point-mass posterior to the uniform prior (the first stage's own)."""
        return self.prior.num_positions * math.log(self.quantizer.num_codes)

    # ----------------------------------------------------------------- the objective
    def objective(self, terms: ELBOTerms) -> Tensor:
        return terms.kl  # -log p(c(x)): the first stage is frozen, its reconstruction term a constant

    # ----------------------------------------------------------------- codes and terms
    @torch.no_grad()
    def first_stage_codes(self, x: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, h, w) nearest-code indices c(x) and (B,) log p(x|c(x)), nats, of the frozen VQ-VAE."""
        quantized = self.first_stage.quantizer(self.first_stage.encoder(x))
        x_params = self.first_stage.decoder(quantized.z_q)
        return quantized.indices, self.likelihood.log_prob(x if target is None else target, x_params)

    def condition(self, batch: Mapping[str, Tensor]) -> Tensor | None:
        if not self.capabilities.conditional:
            return None
        if self.label_key not in batch:
            raise ConfigError(
                f"The conditional prior needs labels under '{self.label_key}' in each batch, but the data gives "
                f"{sorted(batch)}. Use data with labels or set model.label_key."
            )
        return batch[self.label_key].long()

    def batch_terms(self, batch: Mapping[str, Tensor]) -> ELBOTerms:
        """The training split's cached codes where the batch has them, else the first stage's codes of the images."""
        if CODES not in batch:
            return super().batch_terms(batch)
        terms = self.code_terms(batch[CODES].long(), batch[CODES_LOG_PX], self.condition(batch))
        terms.loss = self.objective(terms)
        return terms

    def elbo_terms(self, x: Tensor, condition: Tensor | None = None, target: Tensor | None = None) -> ELBOTerms:
        codes, log_px_z = self.first_stage_codes(x, target)
        return self.code_terms(codes, log_px_z, condition)

    def code_terms(self, codes: Tensor, log_px_z: Tensor, condition: Tensor | None = None) -> ELBOTerms:
        """The ELBO terms with the learned prior: KL per latent position = -log p(c_i | c_<i), nats."""
        logits = self.prior(codes, condition)  # (B, h·w, K)
        nll_per_position = F.cross_entropy(logits.transpose(1, 2), codes.flatten(1), reduction="none")
        return ELBOTerms(
            log_px_z=log_px_z,
            kl_per_example_dim=nll_per_position,
            x_params=None,
            z=codes,
            extras={
                "code_nll": nll_per_position.detach().mean(),
                "uniform_prior_elbo": (log_px_z - self.uniform_prior_kl).mean(),
            },
        )

    def log_importance_weights(
        self, x: Tensor, num_samples: int, condition: Tensor | None = None, target: Tensor | None = None, **_: Any
    ) -> ImportanceSamples:
        """The posterior is one point c(x): every sample is c(x), with weight
        log p(x|c(x)) + log p(c(x)) - log q(c(x)|x) = the ELBO (log q = 0). The importance-sampled
        NLL of this model is its ELBO, for any k; computed once, not k times. (``evaluate``
        reports that bound as the ELBO: ``capabilities.importance_weights`` is False, so its
        generic estimator does not recompute the same weight k times.)"""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        terms = self.elbo_terms(x, condition, target)
        weights = terms.elbo_per_example[:, None].expand(-1, num_samples)
        return ImportanceSamples(log_weights=weights, z=terms.z.flatten(1).expand(num_samples, -1, -1))

    # ----------------------------------------------------------------- the training split's codes
    def on_fit_start(self) -> None:
        # The first stage is in eval mode on purpose; Lightning would warn about it once fit starts.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        self.cache_training_codes(self.trainer.datamodule)

    @torch.no_grad()
    def cache_training_codes(self, datamodule: Any) -> None:
        """Add the training split's codes and log p(x|c(x)) to the split (once), so every batch carries them."""
        if datamodule.corruption is not None:
            raise ConfigError(
                "A learned prior is fitted to the codes of clean images: drop data.corruption for the second stage."
            )
        train = datamodule.splits["train"]
        if CODES in train:
            return
        images = datamodule.training_images_once()  # under binarize=dynamic: one fixed draw
        codes, log_px_z = [], []
        for chunk in images.split(datamodule.eval_batch_size):
            x = chunk.to(self.device).float().div_(255.0)
            chunk_codes, chunk_log_px_z = self.first_stage_codes(x)
            codes.append(chunk_codes.to(torch.int32).cpu())
            log_px_z.append(chunk_log_px_z.float().cpu())
        train[CODES], train[CODES_LOG_PX] = torch.cat(codes), torch.cat(log_px_z)

    # ----------------------------------------------------------------- sampling
    def prior_sample(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Code grids drawn from the learned prior (conditional: labels cycling through the classes)."""
        labels = torch.arange(num_samples) % self.num_classes if self.capabilities.conditional else None
        return {"z": self.prior.sample(num_samples, labels, generator).cpu()}

    def class_grid_sample(self, samples_per_class: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Code grids drawn given each class in turn, ``samples_per_class`` per class."""
        labels = torch.arange(self.num_classes).repeat_interleave(samples_per_class)
        return {"z": self.prior.sample(len(labels), labels, generator).cpu()}

    @torch.no_grad()
    def generate(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """Decode a grid of code indices (B, h, w) with the first stage."""
        return self.first_stage.generate(z)

    @torch.no_grad()
    def latent_code(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.first_stage.latent_code(x)

    @torch.no_grad()
    def decode_latent(self, code: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.first_stage.decode_latent(code)
