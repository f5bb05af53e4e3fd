"""Evaluating a trained run: the numbers a paper's table holds, and pictures from a checkpoint.

Everything here works without the command line; :mod:`vae_zoo.evaluate` and
:mod:`vae_zoo.sample` are thin Hydra entry points around :func:`evaluate` and
:func:`write_samples`.

**Which config.** A checkpoint is evaluated with the config it was trained with, composed by
:mod:`vae_zoo.run.run_config` (the run's ``config.yaml``, then ``conf/evaluate.yaml`` or
``conf/sample.yaml``, then the command line). The config also gets ``run_dir``, the run folder,
which places the results in ``<run>/evaluation/`` (``<run>/samples/`` for pictures).

**Units.** As everywhere in vae_zoo (README, "Units"): ELBO, reconstruction NLL, KL and the
importance-sampled NLL are in nats per example, summed over the D = C*H*W data dimensions and
the latent dimensions, averaged over the examples; ``bits/dim = nats / (D ln 2)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor

from vae_zoo.data.splits import SplitBatches
from vae_zoo.errors import ConfigError
from vae_zoo.metrics.report import EvaluationReport
from vae_zoo.metrics.suite import EvaluationContext, EvaluationMetric
from vae_zoo.models.base import ELBOModule
from vae_zoo.run.cpu import use_cpu_settings
from vae_zoo.run.run_config import check_run_config, load_run, resolve_device
from vae_zoo.support.instantiation import instantiate

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------- evaluate
def evaluate(cfg: DictConfig) -> EvaluationReport:
    """Compute the metrics listed under ``cfg.metrics`` (:mod:`vae_zoo.metrics.suite`; ``conf/evaluate.yaml``
    lists ELBO and reconstruction, the importance-sampled NLL, active units, codebook usage,
    FID, disentanglement and anomaly detection, with the settings under ``cfg.evaluate``), write
    ``metrics.json`` and ``metrics.md`` into ``cfg.paths.output_dir`` and return the report.

    The order is: the run's config is checked against the trusted targets, each metric is built
    and prepared (a FID extractor that cannot be had fails, or is skipped, before anything is
    computed), then model and data are loaded, and each metric in turn either says in one line
    why it does not apply or adds its rows.
    """
    settings = cfg.evaluate
    run = check_run_config(cfg)  # before anything is built from it
    use_cpu_settings(cfg)  # the trained run's (denormals flushed: the IS-NLL's decodes)
    device = resolve_device(settings.device)
    L.seed_everything(settings.seed, verbose=False)
    metrics: list[EvaluationMetric] = []
    for key, node in (cfg.get("metrics") or {}).items():
        if node is None:
            continue
        metric = instantiate(node, _recursive_=False)  # nested nodes (feature extractor, classifier) are built on use
        if not isinstance(metric, EvaluationMetric):
            raise ConfigError(
                f"metrics.{key} builds a {type(metric).__name__}, not an EvaluationMetric (vae_zoo.metrics.suite)."
            )
        metric.prepare(device, cfg.data.get("channels"))
        metrics.append(metric)
    loaded = load_run(cfg, device)
    batches = SplitBatches(loaded.datamodule, settings.split, device, settings.max_examples)
    context = EvaluationContext(
        model=loaded.model,
        datamodule=loaded.datamodule,
        batches=batches,
        device=device,
        seed=settings.seed,
        generator=torch.Generator(device=device).manual_seed(settings.seed),
    )
    report = EvaluationReport(
        context={
            "checkpoint": str(run.checkpoint),
            "run_dir": str(run.run_dir),
            "model": type(loaded.model).__name__,
            "data": type(loaded.datamodule).__name__,
            "split": settings.split,
            "num_examples": batches.num_examples,
            "data_dim": loaded.model.data_dim,
            "latent_dim": loaded.model.latent_dim,
            "device": str(device),
            "seed": settings.seed,
        }
    )
    log.info("Evaluating %s on %d %s examples (%s).", run.checkpoint, batches.num_examples, settings.split, device)
    for metric in metrics:
        reason = metric.skip_reason(context)
        if reason is None:
            metric.compute(context, report)
        else:
            report.skip(metric.name, reason)
    json_path, markdown_path = report.write(Path(cfg.paths.output_dir))
    log.info("Wrote %s and %s.", json_path, markdown_path)
    return report


# ---------------------------------------------------------------------------------- sample
def write_samples(cfg: DictConfig) -> dict[str, Path]:
    """Write pictures of a trained model as PNG files into ``cfg.paths.output_dir``:

    * ``prior_samples.png``: ``cfg.num_samples`` decoded prior draws (seeded by ``cfg.seed``),
      ``cfg.nrow`` per row;
    * ``interpolations.png``: rows of ``cfg.interpolations.steps`` decodings on the line between
      the latent codes of pairs of the split's first images;
    * ``traversals.png`` (Gaussian latents): rows = the ``cfg.traversals.num_dims`` dimensions
      with the largest KL on the split, columns = values from -span to +span.

    The pictures are rendered by the training callbacks (:mod:`vae_zoo.callbacks.images`), so
    they look as the run's own. Returns name -> path of what was written.
    """
    from torchvision.utils import save_image

    from vae_zoo.callbacks import Interpolations, LatentTraversals, PictureInputs, PriorSamples

    device = resolve_device(cfg.device)
    L.seed_everything(cfg.seed, verbose=False)
    loaded = load_run(cfg, device)
    model = loaded.model
    batches = SplitBatches(loaded.datamodule, cfg.split, device)
    first = batches.first()
    output_dir = Path(cfg.paths.output_dir)
    callbacks = [
        PriorSamples(str(output_dir), num_images=cfg.num_samples, nrow=cfg.nrow, seed=cfg.seed),
        Interpolations(str(output_dir), **cfg.interpolations),
        LatentTraversals(str(output_dir), **cfg.traversals),
    ]
    inputs = PictureInputs(
        batch=first, metrics=_kl_per_dim_metrics(model, batches) if model.capabilities.gaussian_posterior else {}
    )
    written = {}
    for callback in callbacks:
        if not callback.applies_to(model):
            log.info("%s: does not apply to %s, skipped.", callback.name, type(model).__name__)
            continue
        with torch.no_grad():
            image = callback.render(model, inputs)
        path = output_dir / f"{callback.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(image, path)
        written[callback.name] = path
    return written


@torch.no_grad()
def _kl_per_dim_metrics(model: ELBOModule, batches: SplitBatches) -> dict[str, Tensor]:
    """KL of each latent dimension averaged over the split, under the keys the traversal
    callback ranks dimensions by (``val/kl_dim/<i>``)."""
    total, count = torch.zeros(model.latent_dim, dtype=torch.float64, device=model.device), 0
    for batch in batches():
        total += model.batch_terms(batch).kl_per_example_dim.double().sum(dim=0)
        count += len(batch["image"])
    return {f"val/kl_dim/{i}": value for i, value in enumerate((total / count).cpu())}
