"""Posterior collapse, said at the epoch it happens: the decoder has learnt to ignore z."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from vae_zoo.blocks.stats import ACTIVE_UNIT_THRESHOLD, active_unit_mask

log = logging.getLogger(__name__)

#: the metric this callback logs each validation: 1 when the posterior has collapsed, else 0
COLLAPSED = "val/posterior_collapsed"


class PosteriorCollapseWatch(Callback):
    """After each validation, once the KL weighting is at full strength (a warm-up or a capacity
    ramp finished), call the posterior collapsed when no latent unit is active
    (``val/active_units`` = 0: Cov_x E[z|x] <= 0.01 in every dimension, Burda et al. 2016) or the
    total KL is below ``min_kl`` nats per example, at two validations in a row (a run with the KL at
    full weight from its first step looks collapsed before it has learnt anything, and recovers).
    At the second (and again whenever it comes back after a recovery) a warning on the console and
    in ``train.log`` names the epochs, the figures and the remedies; ``val/posterior_collapsed``
    (0 or 1) is written to every logger at each validation. Models without a Gaussian posterior
    (VQ-VAE) are not watched.

    The figures are read from the model's validation means (``epoch_means["val"]``, the same
    numbers its ``val/active_units`` and ``val/kl`` are), so the flag is logged in the same row.
    Written by hand: no Lightning or torchmetrics callback watches for posterior collapse.

    Args:
        min_kl: total KL, nats per example, below which a run counts as collapsed.
    """

    def __init__(self, min_kl: float = 0.1):
        self.min_kl = min_kl
        self.since_epoch: int | None = None  # the first epoch of the current run of collapsed validations
        self.warned = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or not pl_module.capabilities.gaussian_posterior:
            return
        means = pl_module.epoch_means["val"].compute()  # cached: the model's own epoch end reads the same
        active, kl = int(active_unit_mask(means).sum()), float(means["kl"])
        schedule = pl_module.kl_schedule
        full_strength = schedule.weight() >= 1.0 and schedule.capacity() in (None, schedule.capacity_max)
        looks_collapsed = full_strength and (active == 0 or kl < self.min_kl)
        if not looks_collapsed:
            self.since_epoch, self.warned = None, False
        elif self.since_epoch is None:
            self.since_epoch = trainer.current_epoch
        collapsed = looks_collapsed and trainer.current_epoch > self.since_epoch
        if collapsed and not self.warned:
            log.warning(self.message(trainer, pl_module, active, kl))
            self.warned = True
        pl_module.log(COLLAPSED, float(collapsed))

    def message(self, trainer: L.Trainer, pl_module: Any, active: int, kl: float) -> str:
        warmup = pl_module.kl_schedule.warmup_steps or 1500
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else 1e-3
        return (
            f"Posterior collapse since epoch {self.since_epoch} (now epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}): {active} of "
            f"{pl_module.latent_dim} latent units active (variance of E[z|x] > {ACTIVE_UNIT_THRESHOLD}) and val/kl = "
            f"{kl:.3g} nats per example with the KL at full weight: the decoder ignores z and the reconstructions "
            f"are the mean image. Remedies: a longer warm-up with a free-bits floor held while it ramps "
            f"(kl_schedule=warmup_free_bits model.kl_schedule.warmup_steps={2 * warmup} model.kl_schedule.free_bits=0.5 "
            f"model.kl_schedule.free_bits_during_warmup=true), free bits throughout (kl_schedule=free_bits "
            f"model.kl_schedule.free_bits=0.25), a lower learning rate (model.optimizer.lr={lr / 2:g}), or a smaller "
            f"weight on the KL (model.beta)."
        )

    def state_dict(self) -> dict[str, Any]:
        return {"since_epoch": -1 if self.since_epoch is None else self.since_epoch, "warned": self.warned}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        since = int(state_dict.get("since_epoch", -1))
        self.since_epoch, self.warned = (None if since < 0 else since), bool(state_dict.get("warned", False))
