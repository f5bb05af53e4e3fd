"""The shared ELBO LightningModule every variant builds on.

Contract:

* Units: every term is **nats per example** - summed over data dimensions and latent
  dimensions, averaged over the batch. ``bits/dim = nats / (D ln 2)`` with D = C*H*W.
* One step computes one :class:`ELBOTerms`: reconstruction NLL, KL per latent dimension as a
  ``(latent_dim,)`` tensor, total KL, the ELBO and the variant's weighted ``loss``.
* Denoising: a batch may carry ``target`` (the clean image) next to ``image`` (the corrupted
  input the encoder sees); p(x|z) then scores the target.
* Stable log keys: ``train/loss``, ``train/elbo``, ``train/recon``, ``train/kl``,
  ``val/elbo``, ``val/recon``, ``val/kl``, ``val/loss``, ``val/bits_per_dim`` and
  ``val/kl_dim/<i>`` (likewise ``test/...``), with ``train/beta`` (or ``train/capacity``) and
  ``train/grad_norm`` (the total gradient norm before any clip). ``val/elbo`` means the same
  (unweighted) thing for every variant, so runs compare on one chart.
* A variant overrides only what differs: :meth:`objective` (how the terms are weighted; it
  sees the posterior, the sampled z and, on request, k importance samples), :meth:`condition`
  (what a conditional model is given), and for other posteriors :meth:`build_nets` /
  :meth:`encode` / :meth:`kl_per_example_dim` / :meth:`prior_sample` /
  :meth:`log_importance_weights`.
* One path to a likelihood: :meth:`log_importance_weights` gives log p(x, z_s) - log q(z_s|x)
  for k posterior samples, (B, k). The IWAE objective and the test NLL estimator
  (:mod:`vae_zoo.metrics.likelihood`) both use it, so a model that defines it gets both.
* What a model can do is declared once, in :attr:`ELBOModule.capabilities`
  (:class:`Capabilities`); callbacks, evaluation and the experiment ask that, never ``hasattr``.
* The KL weighting (β, warm-up, cyclical, free bits, capacity) is one
  :class:`~vae_zoo.schedules.KLSchedule`, stepped by the trainer's global step, logged as
  ``train/beta`` / ``train/capacity`` and saved in every checkpoint.

Logging never forces a host sync per step: values stay tensors on the device; Lightning
converts them at ``log_every_n_steps`` and at epoch end, and nothing per-step goes to the
progress bar (Lightning's progress bars call ``.item()`` on their metrics every batch). A
training step calls ``self.log`` only when its values reach a logger
(:meth:`ELBOModule.step_reaches_logger`): the framework costs no more per step than a plain
loop (BENCHMARKS.md, "Framework overhead").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from vae_zoo.errors import ConfigError, NonFiniteLossError
from vae_zoo.lightning_internals import logs_reach_a_logger
from vae_zoo.likelihoods import DiagonalGaussian, Likelihood
from vae_zoo.models.terms import Capabilities, ELBOTerms, ImportanceSamples
from vae_zoo.schedules import KLSchedule
from vae_zoo.stats import (
    ACTIVE_UNITS,
    BITS_PER_DIM,
    ELBO_TERMS,
    KL_PER_DIM,
    LOG_2PI,
    ExampleMeans,
    active_unit_mask,
    bits_per_dim,
    metric_key,
    standard_normal_log_prob,
)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def _repeat_batch(t: Tensor, times: int) -> Tensor:
    """(B, ...) -> (times * B, ...), the whole batch repeated ``times`` times (sample-major)."""
    return t.unsqueeze(0).expand(times, *t.shape).reshape(times * t.shape[0], *t.shape[1:])


@contextmanager
def nets_must_fit(model_name: str, expected: str) -> Iterator[None]:
    """Turn a net factory's ``TypeError`` about its shape arguments into a config error."""
    try:
        yield
    except TypeError as error:
        raise ConfigError(
            f"{model_name} needs {expected}, but the configured net does not take its shape "
            f"arguments ({error}). Pick a matching `net=` option or leave the model's default."
        ) from error


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


class ELBOModule(L.LightningModule):
    """A VAE with a diagonal Gaussian posterior, a N(0, I) prior and a configurable p(x|z).

    Args:
        encoder: factory ``encoder(in_channels=, image_size=, out_features=)``; the module asks
            for ``2 * latent_dim`` outputs (mean and log-variance).
        decoder: factory ``decoder(in_features=, out_channels=, image_size=)``.
        likelihood: the observation model p(x|z) (:mod:`vae_zoo.likelihoods`).
        latent_dim: size of z.
        image_channels, image_size: shape of the (square) images this model takes.
        optimizer: factory ``optimizer(params)`` (a ``_partial_`` config).
        lr_scheduler: optional factory ``lr_scheduler(optimizer)``.
        lr_scheduler_interval: ``"epoch"`` or ``"step"``.
        lr_scheduler_monitor: metric a ReduceLROnPlateau-style scheduler watches.
        kl_schedule: how the KL term is weighted over training (default: constant, the ELBO).
        condition_dim: size of the conditioning vector a conditional variant feeds to both
            nets (0 for unconditional models).
    """

    #: weight β on the KL term (the vanilla VAE's is 1; β-VAE sets its own).
    beta: float = 1.0
    #: what this model can do; a variant that differs declares its own.
    capabilities: Capabilities = Capabilities()
    #: the run this model was read from (:func:`vae_zoo.run_config.load_frozen_model`), else None
    loaded_from: Any = None
    #: the run of a frozen first stage this model builds on (a second stage), else None; the
    #: run folder names it in ``parent.json``
    parent: Any = None

    def __init__(
        self,
        encoder: Callable[..., nn.Module],
        decoder: Callable[..., nn.Module],
        likelihood: Likelihood,
        latent_dim: int,
        image_channels: int,
        image_size: int,
        optimizer: OptimizerFactory,
        lr_scheduler: SchedulerFactory | None = None,
        lr_scheduler_interval: str = "epoch",
        lr_scheduler_monitor: str = "val/loss",
        kl_schedule: KLSchedule | None = None,
        condition_dim: int = 0,
    ):
        super().__init__()
        if not (isinstance(latent_dim, int) and latent_dim >= 1):
            raise ConfigError(f"model.latent_dim must be a whole number >= 1, got {latent_dim!r}.")
        # objects built from the config are saved as modules/state, not as hyperparameters
        self.save_hyperparameters(
            ignore=[
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
            ],
            logger=False,
        )
        for key, value in list(self.hparams.items()):  # plain values only: checkpoints load with weights_only=True
            self.hparams[key] = plain(value)
        self.latent_dim = latent_dim
        self.image_shape = (image_channels, image_size, image_size)
        self.condition_dim = condition_dim
        self.likelihood = likelihood
        self.kl_schedule = kl_schedule if kl_schedule is not None else KLSchedule()
        refused = [form for form in self.kl_schedule.forms() if form not in self.capabilities.kl_schedules]
        if refused:
            honoured = ", ".join(self.capabilities.kl_schedules) or "none (only kl_schedule=constant)"
            raise ConfigError(
                f"{type(self).__name__}'s objective cannot honour the KL schedule's {' and '.join(refused)} "
                f"(model.kl_schedule: {self.kl_schedule!r}); it honours {honoured}. Pick another kl_schedule= "
                "(e.g. kl_schedule=constant), so that the run does not log a weighting its loss never used."
            )
        self.build_nets(encoder, decoder)
        self.epoch_means = nn.ModuleDict({stage: ExampleMeans(self._epoch_mean_shapes()) for stage in ("val", "test")})
        self.optimizer_factory = plain_arguments(optimizer)
        self.lr_scheduler_factory = plain_arguments(lr_scheduler)
        self.lr_scheduler_interval = lr_scheduler_interval
        self.lr_scheduler_monitor = lr_scheduler_monitor
        # the first training step whose loss was NaN/inf (-1: none yet), kept on the device so
        # that watching every step costs no host sync; read by check_finite()
        self.register_buffer("first_non_finite_step", torch.tensor(-1, dtype=torch.long), persistent=False)
        self._step_reaches_logger = True  # set by each training step (step_reaches_logger)

    def build_nets(self, encoder: Callable[..., nn.Module], decoder: Callable[..., nn.Module]) -> None:
        """Encoder to (mean, log-variance) of z; decoder from z to the parameters of p(x|z).
        A condition enters the encoder as extra constant image channels and the decoder as
        extra inputs."""
        channels, size, _ = self.image_shape
        with nets_must_fit(type(self).__name__, "a vector encoder/decoder (net=conv or net=mlp)"):
            self.encoder = encoder(
                in_channels=channels + self.condition_dim, image_size=size, out_features=2 * self.latent_dim
            )
            self.decoder = decoder(
                in_features=self.latent_dim + self.condition_dim,
                out_channels=self.likelihood.param_channels(channels),
                image_size=size,
            )

    # ----------------------------------------------------------------- the model
    @property
    def data_dim(self) -> int:
        """D = C * H * W, the number of data dimensions (for bits/dim)."""
        return math.prod(self.image_shape)

    def condition(self, batch: Mapping[str, Tensor]) -> Tensor | None:
        """What the model is conditioned on, from a batch (None: unconditional)."""
        return None

    def encode(self, x: Tensor, condition: Tensor | None = None) -> DiagonalGaussian:
        """q(z|x) for a batch of images."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return DiagonalGaussian(mu, logvar)

    def decode(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """Parameters of p(x|z), image-shaped."""
        return self.decoder(z)

    def kl_per_example_dim(self, posterior: DiagonalGaussian) -> Tensor:
        """(B, latent_dim) KL(q(z|x) || N(0, I)) in closed form, nats."""
        return posterior.kl_to_standard_normal()

    def elbo_terms(self, x: Tensor, condition: Tensor | None = None, target: Tensor | None = None) -> ELBOTerms:
        """Evaluate the ELBO terms on a batch with one reparameterised sample per example.
        ``target`` is what p(x|z) scores (default ``x``; the clean image when denoising)."""
        posterior = self.encode(x, condition)
        z = posterior.rsample()
        x_params = self.decode(z, condition)

        def importance_samples(num_samples: int, stop_posterior_gradient: bool = False) -> ImportanceSamples:
            return self.log_importance_weights(
                x, num_samples, condition, target, posterior=posterior, stop_posterior_gradient=stop_posterior_gradient
            )

        return ELBOTerms(
            log_px_z=self.likelihood.log_prob(x if target is None else target, x_params),
            kl_per_example_dim=self.kl_per_example_dim(posterior),
            x_params=x_params,
            latent_mean=posterior.mu,
            posterior=posterior,
            z=z,
            importance_samples=importance_samples,
        )

    def log_importance_weights(
        self,
        x: Tensor,
        num_samples: int,
        condition: Tensor | None = None,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        posterior: DiagonalGaussian | None = None,
        stop_posterior_gradient: bool = False,
    ) -> ImportanceSamples:
        """Draw ``num_samples`` = k samples z_s ~ q(z|x) per example and weigh them:
        log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x), (B, k), nats.

        The one path to a likelihood: ``logsumexp_s log w_s - log k`` is the k-sample IWAE
        bound (Burda et al. 2016), the IWAE objective and the test NLL estimator
        (:func:`vae_zoo.metrics.importance_sampled_log_likelihood`) both call this, and a model
        with another posterior or prior (hierarchical, flows) overrides it to get both.

        Args:
            x: (B, C, H, W) model-ready images.
            num_samples: k >= 1.
            condition: what a conditional model is given.
            target: what p(x|z) scores (default ``x``; the clean image when denoising).
            generator: random generator for the noise (on x's device); None: the global one.
                Noise is drawn one (B, latent_dim) sample at a time, so the stream does not
                depend on how a caller chunks k.
            posterior: q(z|x) if already computed (default: encode ``x``).
            stop_posterior_gradient: evaluate log q(z_s|x) with the posterior's parameters
                detached, so the encoder's gradient flows through z_s only (needed by DReG,
                Tucker et al. 2019).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        posterior = self.encode(x, condition) if posterior is None else posterior
        # contiguous copies: the encoder's halves are strided views, slow to broadcast against
        mu, logvar = posterior.mu.contiguous(), posterior.logvar.contiguous()
        noise = torch.stack(
            [torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device) for _ in range(num_samples)]
        )
        z = mu + torch.exp(0.5 * logvar) * noise  # (k, B, latent_dim)
        if stop_posterior_gradient:
            log_q = DiagonalGaussian(mu.detach(), logvar.detach()).log_prob(z)  # (k, B)
        else:  # the same value from the noise that made z, without recomputing (z - mu) / std
            log_q = -0.5 * (noise.pow(2) + logvar + LOG_2PI).sum(dim=-1)  # (k, B)
        k, batch = num_samples, x.shape[0]
        flat_condition = None if condition is None else _repeat_batch(condition, k)
        x_params = self.decode(z.reshape(k * batch, -1), flat_condition)
        log_px_z = self.likelihood.log_prob(_repeat_batch(x if target is None else target, k), x_params).reshape(
            k, batch
        )
        return ImportanceSamples(log_weights=(log_px_z + standard_normal_log_prob(z) - log_q).t(), z=z)

    def objective(self, terms: ELBOTerms) -> Tensor:
        """The scalar to minimise, nats per example:

            recon + β·w(t)·KL + w(t)·regulariser

        with the KL part as :meth:`kl_penalty` weighs it (β, warm-up or cyclical w(t), free bits,
        or the capacity form) and the variant's :meth:`regulariser` ramped by the same w(t), so a
        new penalty is warmed up with the KL without writing it. A variant whose loss is not of
        this form (IWAE's bound, the VQ-VAEs') overrides this instead."""
        return terms.recon + self.kl_penalty(terms) + self.kl_schedule.weight() * self.regulariser(terms)

    def kl_penalty(self, terms: ELBOTerms) -> Tensor:
        """The KL part of the loss as weighted by β and the schedule at the current step."""
        return self.kl_schedule.kl_penalty(terms.kl_per_dim, beta=self.beta)

    def regulariser(self, terms: ELBOTerms) -> Tensor | float:
        """What a variant adds to the (β-weighted) ELBO's terms, unweighted by the schedule
        (FactorVAE: γ·TC; DIP-VAE: the covariance penalties); the vanilla VAE: nothing."""
        return 0.0

    def batch_terms(self, batch: Mapping[str, Tensor]) -> ELBOTerms:
        """The terms of a data batch, read the one way every stage and evaluation reads it: the
        encoder sees ``batch["image"]`` with the model's condition, and p(x|z) scores
        ``batch["target"]`` when the data is corrupted for denoising, else the image."""
        return self(batch["image"], self.condition(batch), batch.get("target"))

    def forward(self, x: Tensor, condition: Tensor | None = None, target: Tensor | None = None) -> ELBOTerms:
        terms = self.elbo_terms(x, condition, target)
        terms.loss = self.objective(terms)
        return terms

    @torch.no_grad()
    def latent_code(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """A deterministic latent code for each image: the posterior mean E_q[z|x]."""
        return self.encode(x, condition).mu

    @torch.no_grad()
    def decode_latent(self, code: Tensor, condition: Tensor | None = None) -> Tensor:
        """Images in [0, 1] for latent codes as :meth:`latent_code` gives them (or their
        interpolations and traversals)."""
        return self.generate(code, condition)

    def latent_layers(self) -> dict[str, range]:
        """Layer name -> its dimensions in z, for models with several stochastic layers (whose
        active units are then also logged per layer); a single-layer model: none."""
        return {}

    @property
    def traversal_dims(self) -> range:
        """The latent dimensions a traversal may vary (all of them; a hierarchy: its top layer)."""
        return range(self.latent_dim)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Mean of p(x|z) at the posterior mean of z: images in [0, 1]."""
        return self.decode_latent(self.latent_code(x, condition), condition)

    def prior_sample(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw the inputs of :meth:`generate` from the prior, on the CPU: z ~ N(0, I)."""
        return {"z": torch.randn(num_samples, self.latent_dim, generator=generator)}

    @torch.no_grad()
    def generate(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """Mean images of p(x|z) for the given latents, in [0, 1]."""
        condition = None if condition is None else condition.to(self.device)
        return self.likelihood.mean(self.decode(z.to(self.device), condition))

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Images decoded from ``num_samples`` prior draws, in [0, 1]."""
        return self.generate(**self.prior_sample(num_samples, generator))

    # ------------------------------------------------------------- Lightning steps
    #: optimizer steps per training batch; Lightning's global_step counts each optimizer's steps
    #: (FactorVAE's two), and the KL schedule counts batches, the same for every variant
    optimizer_steps_per_batch: int = 1

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.kl_schedule.set_step(self.global_step // self.optimizer_steps_per_batch)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        terms = self.batch_terms(batch)
        self._watch_finite(terms.loss)
        self.log_training_step(terms, batch_size=batch["image"].shape[0])
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
        nats), and train/free_bits = λ nats per dimension when set. Python floats, no sync. A model whose loss has no
        KL weight (it honours no schedule: IWAE's bound, the VQ-VAEs) logs none."""
        if not self.capabilities.kl_schedules:
            return
        capacity = self.kl_schedule.capacity()
        if capacity is None:
            self.log("train/beta", self.beta * self.kl_schedule.weight(), on_step=True, on_epoch=False)
        else:
            self.log("train/capacity", capacity, on_step=True, on_epoch=False)
        if self.kl_schedule.free_bits:
            self.log("train/free_bits", float(self.kl_schedule.free_bits), on_step=True, on_epoch=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()  # raising here stops the save: no checkpoint of a diverged model
        checkpoint["kl_schedule"] = self.kl_schedule.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
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
        (:mod:`vae_zoo.lightning_internals`)."""
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
