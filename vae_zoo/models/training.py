"""How an ELBO model trains under Lightning: the plumbing :class:`~vae_zoo.models.base.ELBOModule`
inherits, so that ``models/base.py`` shows only the maths.

* The steps: ``training_step`` minimises ``batch_terms(batch).loss``, by the model's own
  optimisation step (:meth:`LightningTraining.optimisation_step`, Lightning's manual mode: the
  automatic loop's closure and wrappers cost about 300 Python calls a step) when nothing needs
  Lightning's automatic loop (:meth:`LightningTraining.take_over_the_step`); validation and test add
  each batch to exact per-example means (:class:`~vae_zoo.blocks.stats.ExampleMeans`, reduced across DDP
  ranks once at epoch end) and log ``<stage>/loss|elbo|recon|kl|bits_per_dim``,
  ``<stage>/kl_dim/<i>`` and ``<stage>/active_units`` (and per layer for hierarchies).
* Stable log keys: ``train/loss``, ``train/elbo``, ``train/recon``, ``train/kl``, with
  ``train/beta`` (or ``train/capacity``, ``train/free_bits``: the weighting the loss used) and
  ``train/grad_norm`` (the total gradient norm before any clip).
* Logging never forces a host sync per step: values stay tensors on the device; Lightning
  converts them at ``log_every_n_steps`` and at epoch end, and nothing per-step goes to the
  progress bar (Lightning's progress bars call ``.item()`` on their metrics every batch). A
  training step calls ``self.log`` only when its values reach a logger
  (:meth:`LightningTraining.step_reaches_logger`): the framework costs no more per step than a
  plain loop (BENCHMARKS.md, "Framework overhead").
* A NaN/inf loss is noted on the device every step and read at the logging cadence, every epoch
  end and before every checkpoint: no checkpoint of a diverged model is written.
* The KL schedule is stepped by the batches seen and saved in every checkpoint; the optimizers
  come from the config's ``_partial_`` factories.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from vae_zoo.blocks.stats import (
    ACTIVE_UNITS,
    BITS_PER_DIM,
    ELBO_TERMS,
    KL_PER_DIM,
    ExampleMeans,
    active_unit_mask,
    bits_per_dim,
    metric_key,
)
from vae_zoo.errors import NonFiniteLossError
from vae_zoo.models.optimisation import OptimisationStep, plain, plain_arguments
from vae_zoo.models.terms import ELBOTerms
from vae_zoo.support.lightning_internals import carry_step_count, logs_reach_a_logger

#: constructor arguments that are objects built from the config: saved as modules or state, not
#: as hyperparameters
NOT_HYPERPARAMETERS = (
    "encoder",
    "decoder",
    "likelihood",
    "optimizer",
    "lr_scheduler",
    "kl_schedule",
    "quantizer",
    "discriminator_optimizer",
    "first_stage",
    "prior",
)


class LightningTraining(OptimisationStep):
    """Steps, logging, clipping, the NaN watch, optimizers and checkpoint state of an ELBO model
    (the module docstring). The model class provides ``batch_terms``, ``kl_schedule``,
    ``capabilities``, ``latent_dim``, ``data_dim``, ``beta`` and ``latent_layers``."""

    #: optimizer steps per training batch; Lightning's global_step counts each optimizer's steps
    #: (FactorVAE's two), and the KL schedule counts batches, the same for every variant
    optimizer_steps_per_batch: int = 1

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name before and after every hook it calls (30 times a step);
        # nn.Module's __setattr__ first asks whether the value is a parameter, module or buffer
        # (three isinstance checks through Python-level metaclass hooks). It is a plain attribute.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def save_plain_hyperparameters(self) -> None:
        """The constructor's plain arguments as hyperparameters (checkpoints load weights-only)."""
        # Lightning reads the arguments from the calling constructor's frame (and those of its subclasses)
        self.save_hyperparameters(ignore=list(NOT_HYPERPARAMETERS), logger=False, frame=inspect.currentframe().f_back)
        for key, value in list(self.hparams.items()):
            self.hparams[key] = plain(value)

    def set_up_training(
        self, optimizer: Any, lr_scheduler: Any, lr_scheduler_interval: str, lr_scheduler_monitor: str
    ) -> None:
        """The epoch means, the optimizer factories and the NaN flag, once the nets are built."""
        self.epoch_means = nn.ModuleDict({stage: ExampleMeans(self._epoch_mean_shapes()) for stage in ("val", "test")})
        self.optimizer_factory = plain_arguments(optimizer)
        self.lr_scheduler_factory = plain_arguments(lr_scheduler)
        self.lr_scheduler_interval = lr_scheduler_interval
        self.lr_scheduler_monitor = lr_scheduler_monitor
        # the first training step whose loss was NaN/inf (-1: none yet), kept on the device so
        # that watching every step costs no host sync; read by check_finite()
        self.register_buffer("first_non_finite_step", torch.tensor(-1, dtype=torch.long), persistent=False)
        self._step_reaches_logger = True  # set by each training step (step_reaches_logger)
        #: (clip value, "norm" | "value") when the model clips its own steps (manual optimisation:
        #: Lightning then refuses trainer-level clipping), else None; set by :meth:`take_over_the_step`
        self.gradient_clip: tuple[float, str] | None = None
        self.steps_its_own_optimizer = False  # the single-optimizer step below, set by take_over_the_step

    # ----------------------------------------------------- who makes the optimisation step
    def take_over_the_step(
        self,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        accumulate_grad_batches: int = 1,
        precision: Any = "32-true",
    ) -> bool:
        """Make the optimisation step this model's own (Lightning's manual optimisation), when it
        can be made exactly as Lightning's automatic loop makes it, and take the trainer's
        gradient clipping with it. Returns whether it did (then build the trainer with
        ``gradient_clip_val=None``: Lightning refuses trainer-level clipping in manual mode).

        A model with optimizers of its own (``capabilities.manual_optimization``: FactorVAE) always
        does. A single-optimizer model does unless something needs Lightning's automatic loop: an
        LR scheduler (Lightning steps those only in automatic mode), gradient accumulation, a
        float16 gradient scaler, or a variant that overrides a step hook (``training_step``,
        ``optimizer_step``, ``optimizer_zero_grad``, ``backward``, ``on_before_optimizer_step``). Why: the automatic loop wraps
        each step in a closure, an optimizer wrapper and seven hook dispatches (about 400 Python
        calls a step); :meth:`optimisation_step` makes the same step, calling every hook a callback
        or the model overrides (BENCHMARKS.md, "Framework overhead")."""
        own = self.capabilities.manual_optimization or (
            self.lr_scheduler_factory is None
            and accumulate_grad_batches == 1
            and str(precision) not in ("16", "16-mixed")
            and all(
                getattr(type(self), hook) is getattr(LightningTraining, hook)
                for hook in (
                    "training_step",
                    "optimizer_step",
                    "optimizer_zero_grad",
                    "backward",
                    "on_before_optimizer_step",
                )
            )
        )
        if not own:
            return False
        self.automatic_optimization = False
        self.steps_its_own_optimizer = not self.capabilities.manual_optimization
        if gradient_clip_val:
            self.gradient_clip = (float(gradient_clip_val), gradient_clip_algorithm or "norm")
        return True

    # ------------------------------------------------------------- Lightning steps
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.kl_schedule.set_step(self.global_step // self.optimizer_steps_per_batch)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        terms = self.batch_terms(batch)
        self._watch_finite(terms.loss)
        self.log_training_step(terms, batch_size=batch["image"].shape[0])
        if self.steps_its_own_optimizer:
            self.optimisation_step(terms.loss)
        return terms.loss

    def log_training_step(self, terms: ELBOTerms, batch_size: int) -> None:
        """Log the step's training terms and schedule, on the steps where they reach a logger."""
        self._step_reaches_logger = self.step_reaches_logger()
        if self._step_reaches_logger:
            self._log_terms("train", terms, batch_size=batch_size)
            self._log_schedule()

    def on_train_epoch_end(self) -> None:
        self.check_finite()

    def on_validation_epoch_start(self) -> None:
        self.check_finite()

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._accumulate("val", self.batch_terms(batch))

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._accumulate("test", self.batch_terms(batch))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_means("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_means("test")

    def _log_schedule(self) -> None:
        """The weighting the step's loss used: train/beta = β·w(t) (or train/capacity = C(t)
        nats), and train/free_bits = λ(t) nats per dimension when a floor is set (0 once lifted). Python floats, no sync. A model whose loss has no
        KL weight (it honours no schedule: IWAE's bound, the VQ-VAEs) logs none."""
        if not self.capabilities.kl_schedules:
            return
        capacity = self.kl_schedule.capacity()
        if capacity is None:
            self.log("train/beta", self.beta * self.kl_schedule.weight(), on_step=True, on_epoch=False)
        else:
            self.log("train/capacity", capacity, on_step=True, on_epoch=False)
        if self.kl_schedule.free_bits:
            self.log("train/free_bits", self.kl_schedule.floor(), on_step=True, on_epoch=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()  # raising here stops the save: no checkpoint of a diverged model
        checkpoint["kl_schedule"] = self.kl_schedule.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a run saved by the other loop (automatic <-> the model's own step) keeps its step count
        carry_step_count(checkpoint, to_manual=not self.automatic_optimization)
        if "kl_schedule" in checkpoint:
            self.kl_schedule.load_state_dict(checkpoint["kl_schedule"])

    # ----------------------------------------------------------------- logging
    def _epoch_mean_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"loss": (), "elbo": (), "recon": (), "kl": ()}
        if self.capabilities.gaussian_posterior:
            dims = (self.latent_dim,)
            shapes.update(kl_per_dim=dims, latent_mean=dims, latent_mean_sq=dims)
        return shapes

    def _accumulate(self, stage: str, terms: ELBOTerms) -> None:
        """Add a validation/test batch to the epoch sums (exact means over examples, reduced
        across DDP ranks once at epoch end). Batch-level extras go through ``self.log``."""
        batch = terms.log_px_z.shape[0]
        values = {
            "loss": terms.loss.detach().expand(batch),
            "elbo": terms.elbo_per_example,
            "recon": -terms.log_px_z,
            "kl": terms.kl_per_example_dim.sum(dim=1),
        }
        if self.capabilities.gaussian_posterior:
            values.update(
                kl_per_dim=terms.kl_per_example_dim,
                latent_mean=terms.latent_mean,
                latent_mean_sq=terms.latent_mean.pow(2),
            )
        self.epoch_means[stage].update(values)
        for name, value in terms.extras.items():
            self.log(f"{stage}/{name}", value.detach(), on_epoch=True, batch_size=batch, sync_dist=True)

    def _log_epoch_means(self, stage: str) -> None:
        """Log ``<stage>/loss|elbo|recon|kl|bits_per_dim``, ``kl_dim/<i>`` and ``active_units``."""
        means = self.epoch_means[stage].compute()
        self.epoch_means[stage].reset()
        metrics = {metric_key(stage, name): means[name] for name in ELBO_TERMS}
        if stage == "val" and not bool(torch.isfinite(means["elbo"])):
            raise NonFiniteLossError(
                f"The validation ELBO is {float(means['elbo'])} after epoch {self.current_epoch} (step {self.global_step}) "
                "although the training loss was finite: check the validation data and the likelihood (e.g. Gaussian "
                "data outside its range), or lower model.optimizer.lr."
            )
        metrics[metric_key(stage, BITS_PER_DIM)] = bits_per_dim(-means["elbo"], self.data_dim)
        if self.capabilities.gaussian_posterior:
            metrics.update({metric_key(stage, KL_PER_DIM, i): kl for i, kl in enumerate(means["kl_per_dim"])})
            active = active_unit_mask(means)
            metrics[metric_key(stage, ACTIVE_UNITS)] = active.sum().float()
            for layer, dims in self.latent_layers().items():  # a hierarchy: posterior collapse per layer
                metrics[f"{stage}/{ACTIVE_UNITS}_layer/{layer}"] = active[dims.start : dims.stop].sum().float()
        for name, value in metrics.items():  # already reduced over all ranks: no sync_dist
            self.log(name, value, prog_bar=name == "val/elbo")

    def step_reaches_logger(self) -> bool:
        """Whether what this training step logs reaches a logger or the run's final metrics:
        every ``log_every_n_steps``-th step (Lightning's own test), an epoch's last batch, the
        run's last step and a stop (so ``trainer.callback_metrics`` always ends with the newest
        training terms).

        Lightning's ``self.log`` costs about 0.25 ms per value on the CPU whether or not the value
        is ever written (measured: 13 % of an MLP step for the six per-step values); on the other
        steps nothing it would record is ever read, so skipping it changes no logged row.
        Outside a trainer every step logs; a Lightning without the private this reads is an error
        (:mod:`vae_zoo.support.lightning_internals`)."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a trainer (a step called by hand)
            return True
        last_step = 0 < trainer.max_steps <= self.global_step + 1
        return (
            logs_reach_a_logger(trainer)
            or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            or last_step
            or bool(trainer.fast_dev_run)
        )

    def _log_terms(self, stage: str, terms: ELBOTerms, batch_size: int) -> None:
        """Training terms, per step (they reach the logger every log_every_n_steps; only
        on_step, so the keys stay exactly as named: Lightning appends _step/_epoch when both
        on_step and on_epoch are on)."""
        values = dict(zip(ELBO_TERMS, (terms.loss, terms.elbo, terms.recon, terms.kl)), **terms.extras)
        metrics = {metric_key(stage, name): value for name, value in values.items()}
        for name, value in metrics.items():
            self.log(name, value.detach(), on_step=True, on_epoch=False, batch_size=batch_size)

    def _watch_finite(self, loss: Tensor) -> None:
        """Note the first step with a NaN/inf loss in a device flag (no host sync), and read the
        flag at the logging cadence (:meth:`check_finite` also runs at every epoch end, before
        validation and before every checkpoint is written)."""
        bad = ~torch.isfinite(loss.detach())
        flag = self.first_non_finite_step
        flag.copy_(torch.where(bad & (flag < 0), torch.full_like(flag, self.global_step), flag))
        if self.global_step % max(self.trainer.log_every_n_steps, 1) == 0:
            self.check_finite()

    def check_finite(self) -> None:
        """Stop the run if a training loss was NaN/inf, naming the step it first happened at.

        Raises:
            NonFiniteLossError: with the step, where it was noticed, and what to change.
        """
        flag = self.first_non_finite_step
        never = torch.iinfo(flag.dtype).max
        first = torch.where(flag < 0, torch.full_like(flag, never), flag)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank checks at the same points: all stop together, none waits in a collective
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
        step = int(first)  # one host sync, at the checking points only
        if step == never:
            return
        raise NonFiniteLossError(
            f"The training loss became NaN or infinite at step {step} (noticed at step {self.global_step}). "
            "No checkpoint was written after it (checkpoints/last.ckpt, if any, holds the last finite state). Lower "
            "model.optimizer.lr, lower trainer.gradient_clip_val, or check the data scaling for the likelihood, "
            "then start again or resume with ckpt_path=last."
        )
