"""How the KL term is weighted as training goes: one schedule object for every Gaussian variant.

With KL_i the batch-mean KL of latent dimension i (nats) and t the trainer's global step,
the KL part of the loss is

* weighted (β, warm-up, cyclical, free bits):
  ``β · w(t) · Σ_i max(KL_i, λ)``
  where β is the model's weight (1 for the vanilla VAE, Higgins et al. 2017 for β > 1),
  w(t) ∈ [0, 1] is a linear warm-up over ``warmup_steps`` (Bowman et al. 2016) or cyclical
  annealing (Fu et al. 2019: in each cycle of ``cycle_steps`` it ramps linearly from 0 to 1
  over the first ``cycle_ratio`` of the cycle, then stays at 1), and λ = ``free_bits`` is a
  floor per dimension in nats (Kingma et al. 2016): a dimension whose KL is below the floor
  is not pushed further down (zero gradient), so it is not switched off. With
  ``free_bits_during_warmup`` the floor holds only while the warm-up ramps (λ = 0 from
  ``warmup_steps`` on): it keeps the code in use while the decoder learns to read it, and
  from then on the objective is the model's own, unfloored;
* controlled capacity (Burgess et al. 2018), when ``capacity_max`` is set:
  ``γ · |Σ_i KL_i − C(t)|`` with C(t) ramped linearly from 0 to ``capacity_max`` nats over
  ``capacity_steps``.

The schedule is a pure function of the global step, which it records in its state; the model
saves that state in every checkpoint and restores it on resume, so a resumed run continues the
schedule where it stopped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vae_zoo.errors import ConfigError

#: the forms a schedule can take; a model declares which of them its objective honours
#: (:attr:`vae_zoo.models.terms.Capabilities.kl_schedules`) and is refused the others at build
KL_SCHEDULE_FORMS = ("warmup", "cyclical", "free_bits", "capacity")


class KLSchedule:
    """See the module docstring for the formulas.

    Args:
        warmup_steps: linear warm-up of w(t) from 0 to 1 over this many steps (0: none).
        cycle_steps: period of cyclical annealing (0: none). Excludes ``warmup_steps``.
        cycle_ratio: fraction of each cycle spent ramping up.
        free_bits: floor λ per latent dimension, nats (0: none).
        free_bits_during_warmup: hold the floor only until the warm-up ends (False: throughout).
        capacity_max: final capacity C in nats; enables the capacity objective.
        capacity_steps: steps over which C ramps linearly from 0 to ``capacity_max``.
        gamma: weight γ of the capacity objective (Burgess et al. use 1000 for dSprites).
    """

    def __init__(
        self,
        warmup_steps: int = 0,
        cycle_steps: int = 0,
        cycle_ratio: float = 0.5,
        free_bits: float = 0.0,
        free_bits_during_warmup: bool = False,
        capacity_max: float | None = None,
        capacity_steps: int = 0,
        gamma: float = 1000.0,
    ):
        if warmup_steps and cycle_steps:
            raise ConfigError("Choose one of kl_schedule.warmup_steps and kl_schedule.cycle_steps, not both.")
        if not 0 < cycle_ratio <= 1:
            raise ConfigError(f"kl_schedule.cycle_ratio must be in (0, 1], got {cycle_ratio}.")
        if min(warmup_steps, cycle_steps, capacity_steps) < 0 or free_bits < 0:
            raise ConfigError("kl_schedule step counts and free_bits must be >= 0.")
        if capacity_max is not None and (free_bits or warmup_steps or cycle_steps):
            raise ConfigError(
                "The capacity objective (kl_schedule.capacity_max) replaces β weighting: leave "
                "warmup_steps, cycle_steps and free_bits at 0 with it."
            )
        self.warmup_steps, self.cycle_steps, self.cycle_ratio = warmup_steps, cycle_steps, cycle_ratio
        if free_bits_during_warmup and not warmup_steps:
            raise ConfigError(
                "kl_schedule.free_bits_during_warmup holds the floor until the warm-up ends, and there is no "
                "warm-up: set kl_schedule.warmup_steps > 0, or free_bits_during_warmup=false to hold it throughout."
            )
        self.free_bits, self.free_bits_during_warmup = free_bits, bool(free_bits_during_warmup)
        self.capacity_max, self.capacity_steps, self.gamma = capacity_max, capacity_steps, gamma
        self.step = 0

    def forms(self) -> tuple[str, ...]:
        """Which of :data:`KL_SCHEDULE_FORMS` this schedule uses (none: the constant weight, the ELBO)."""
        used = {
            "warmup": self.warmup_steps > 0,
            "cyclical": self.cycle_steps > 0,
            "free_bits": self.free_bits > 0,
            "capacity": self.capacity_max is not None,
        }
        return tuple(form for form in KL_SCHEDULE_FORMS if used[form])

    def check_honoured(self, honoured: tuple[str, ...], model_name: str) -> None:
        """Refuse this schedule for a model whose objective honours only the forms ``honoured``
        (:attr:`~vae_zoo.models.terms.Capabilities.kl_schedules`), naming what it cannot use."""
        refused = [form for form in self.forms() if form not in honoured]
        if refused:
            raise ConfigError(
                f"{model_name}'s objective cannot honour the KL schedule's {' and '.join(refused)} "
                f"(model.kl_schedule: {self!r}); it honours {', '.join(honoured) or 'none (only kl_schedule=constant)'}. "
                "Pick another kl_schedule= (e.g. kl_schedule=constant), so that the run does not log a weighting "
                "its loss never used."
            )

    # ----------------------------------------------------------------- values at a step
    def weight(self, step: int | None = None) -> float:
        """w(t) ∈ [0, 1], the factor on β at ``step`` (default: the current step)."""
        step = self.step if step is None else step
        if self.warmup_steps:
            return min(1.0, step / self.warmup_steps)
        if self.cycle_steps:
            ramp = self.cycle_ratio * self.cycle_steps
            return min(1.0, (step % self.cycle_steps) / ramp)
        return 1.0

    def floor(self, step: int | None = None) -> float:
        """λ(t), the free-bits floor per dimension in nats at ``step`` (0: none, or lifted)."""
        step = self.step if step is None else step
        lifted = self.free_bits_during_warmup and step >= self.warmup_steps
        return 0.0 if lifted else float(self.free_bits)

    def capacity(self, step: int | None = None) -> float | None:
        """C(t) in nats, or None when the capacity objective is off."""
        if self.capacity_max is None:
            return None
        step = self.step if step is None else step
        if not self.capacity_steps:
            return float(self.capacity_max)
        return self.capacity_max * min(1.0, step / self.capacity_steps)

    # ----------------------------------------------------------------- the KL part of the loss
    def kl_penalty(self, kl_per_dim: Tensor, beta: float = 1.0) -> Tensor:
        """The KL part of the loss for batch-mean ``kl_per_dim`` (latent_dim,), nats."""
        capacity = self.capacity()
        if capacity is not None:
            return self.gamma * (kl_per_dim.sum() - capacity).abs()
        floor = self.floor()
        if floor:
            kl_per_dim = torch.clamp(kl_per_dim, min=floor)
        return beta * self.weight() * kl_per_dim.sum()

    # ----------------------------------------------------------------- state
    def set_step(self, step: int) -> None:
        self.step = int(step)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"KLSchedule({fields})"


class StagedLearningRateDecay:
    """Burda et al. (2016, IWAE) learning-rate schedule, as a ``LambdaLR`` factor of the epoch:
    for i = 0 .. stages-1, the 3^i epochs of stage i use ``10^(-i/7)`` times the base rate
    (3280 epochs in all for 8 stages). Epochs past the last stage keep its factor."""

    def __init__(self, stages: int = 8, base: float = 3.0, decay_per_stage: float = 10 ** (-1 / 7)):
        self.stages, self.base, self.decay_per_stage = stages, base, decay_per_stage

    def __call__(self, epoch: int) -> float:
        stage, end = 0, self.base**0
        while epoch >= end and stage < self.stages - 1:
            stage += 1
            end += self.base**stage
        return self.decay_per_stage**stage
