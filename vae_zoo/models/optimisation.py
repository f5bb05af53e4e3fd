"""How an ELBO model's optimisation step updates its weights: the optimizers from the config's
``_partial_`` factories, gradient clipping (with ``train/grad_norm``), and the model's own
single-optimizer step in Lightning's manual mode (:meth:`OptimisationStep.optimisation_step`),
which :class:`~vae_zoo.models.training.LightningTraining` takes over when nothing needs
Lightning's automatic loop."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer import call as lightning_call
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from vae_zoo.errors import ConfigError

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def plain(value: Any) -> Any:
    """An OmegaConf container as plain Python (dicts, lists), anything else as it is: what a
    checkpoint read with ``weights_only=True`` can hold."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def plain_arguments(factory: Any) -> Any:
    """A Hydra ``_partial_`` factory with its list and dict arguments as plain Python containers.

    Hydra passes a list from a config (``betas: [0.5, 0.9]``) as an OmegaConf ``ListConfig``, and
    torch 2.6 (the floor; 2.15 does not) keeps an optimizer's arguments as given in its
    ``param_groups``: the checkpoint then holds an OmegaConf object, which a weights-only read
    refuses (found by the test suite at the dependency floors)."""
    if isinstance(factory, functools.partial):
        return functools.partial(factory.func, *factory.args, **{k: plain(v) for k, v in factory.keywords.items()})
    return factory


class OptimisationStep(L.LightningModule):
    """The optimizers, the clip and the model's own step. The model sets ``optimizer_factory``,
    ``lr_scheduler_factory`` (and its interval and monitor), ``gradient_clip``,
    ``steps_its_own_optimizer`` and ``_step_reaches_logger``."""

    def optimisation_step(self, loss: Tensor) -> None:
        """One step of the model's single optimizer, as Lightning's automatic loop makes it,
        without its closure: ``on_before_zero_grad`` and the zeroing, the backward pass (with
        ``on_before_backward`` / ``on_after_backward``, and DDP's gradient reduction), then the
        step through Lightning's optimizer wrapper (``on_before_optimizer_step`` for the callbacks,
        then the model's, which clips as the automatic loop clips at that point; the step counts
        towards ``global_step``)."""
        optimizer = self.optimizers()
        trainer = self.trainer
        lightning_call._call_callback_hooks(trainer, "on_before_zero_grad", optimizer)
        self.on_before_zero_grad(optimizer)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.steps_its_own_optimizer and (self.gradient_clip is not None or self._step_reaches_logger):
            value, algorithm = self.gradient_clip if self.gradient_clip is not None else (None, None)
            self.configure_gradient_clipping(optimizer, value, algorithm)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip by the total gradient norm as Lightning does (``trainer.gradient_clip_val``), and
        log that norm as ``train/grad_norm`` on the logging steps (also when nothing clips).

        Lightning's clip multiplies every gradient by min(1, max_norm / norm) at every step, so
        that a GPU never waits for the norm. On the CPU there is nothing to wait for: the
        multiply runs only when it clips (it cost 0.16 ms of an MLP step for nothing). A
        gradient scaler (``16-mixed``), value clipping and sharded strategies keep Lightning's
        own path, which knows how to unscale and gather."""
        from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

        trainer = self.trainer
        plain = (
            gradient_clip_algorithm in (None, "norm")
            and getattr(trainer.precision_plugin, "scaler", None) is None
            and isinstance(trainer.strategy, (SingleDeviceStrategy, DDPStrategy))
        )
        if not plain:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        logging = self._step_reaches_logger
        if not gradient_clip_val and not logging:
            return
        parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not parameters:
            return
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        if logging:
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        if not gradient_clip_val:
            return
        if norm.device.type != "cpu" or float(gradient_clip_val) / (float(norm) + 1e-6) < 1.0:  # torch's own test
            torch.nn.utils.clip_grads_with_norm_(parameters, gradient_clip_val, norm)

    def configure_optimizers(self) -> Any:
        return self.configure_optimizers_for(self.parameters())

    def configure_optimizers_for(self, parameters: Any) -> Any:
        """The configured optimizer (and LR scheduler) over ``parameters``."""
        try:
            optimizer = self.optimizer_factory(parameters)
        except TypeError as error:
            if "fused" not in str(error):
                raise
            raise ConfigError(
                f"The configured optimizer does not take `fused` ({error}); the model configs ask for torch's fused "
                "Adam kernel. Drop it for this optimizer with ~model.optimizer.fused on the command line."
            ) from error
        if self.lr_scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.lr_scheduler_factory(optimizer),
                "interval": self.lr_scheduler_interval,
                "monitor": self.lr_scheduler_monitor,
            },
        }
