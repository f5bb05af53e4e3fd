"""Evaluating a trained run: the numbers a paper's table holds, and pictures from a checkpoint.

Everything here works without the command line; :mod:`vae_zoo.evaluate` and
:mod:`vae_zoo.sample` are thin Hydra entry points around :func:`evaluate` and
:func:`write_samples`.

**Which config.** A checkpoint is evaluated with the config it was trained with, composed by
:mod:`vae_zoo.run_config` (the run's ``config.yaml``, then ``conf/evaluate.yaml`` or
``conf/sample.yaml``, then the command line). The config also gets ``run_dir``, the run folder,
which places the results in ``<run>/evaluation/`` (``<run>/samples/`` for pictures).

**Units.** As everywhere in vae_zoo (DESIGN.md): ELBO, reconstruction NLL, KL and the
importance-sampled NLL are in nats per example, summed over the D = C*H*W data dimensions and
the latent dimensions, averaged over the examples; ``bits/dim = nats / (D ln 2)``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from vae_zoo.checkpointing import load_checkpoint
from vae_zoo.data.base import InMemoryDataModule
from vae_zoo.errors import ConfigError
from vae_zoo.experiment import check_compatible, instantiate
from vae_zoo.metrics import (
    ACTIVE_UNIT_THRESHOLD,
    FeatureExtractorUnavailableError,
    active_units,
    bits_per_dim,
    dci,
    factor_vae_score,
    frechet_distance,
    importance_sampled_log_likelihoods,
    latent_codes_and_factors,
    mutual_information_gap,
    negative_elbo_scores,
    ood_detection_scores,
)
from vae_zoo.models.base import ELBOModule
from vae_zoo.run_config import TrainedRun, locate_run
from vae_zoo.trust import check_trusted_targets

log = logging.getLogger(__name__)

def resolve_device(name: str) -> torch.device:
    """``auto``: the first CUDA device if there is one, else the CPU; anything else as torch
    spells it (``cpu``, ``cuda:1``, ``mps``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --------------------------------------------------------------------- model and its data
def check_run_config(cfg: DictConfig) -> TrainedRun:
    """Locate the run and refuse its config if it names an untrusted ``_target_`` (before
    anything from it is built). ``cfg.trusted_targets`` comes from the command line and
    ``conf/evaluate.yaml`` / ``conf/sample.yaml``, which compose after the run's config."""
    run = locate_run(cfg.ckpt_path)
    check_trusted_targets(cfg, list(cfg.get("trusted_targets") or ()), source=f"the config of {run.run_dir} (config.yaml, with the command line)")
    return run


@dataclass
class LoadedRun:
    """A trained model in eval mode on its device, with the data it was trained on."""

    model: ELBOModule
    datamodule: InMemoryDataModule
    run: TrainedRun
    device: torch.device


def load_run(cfg: DictConfig, device: torch.device) -> LoadedRun:
    """Build data and model from ``cfg`` exactly as training did, and load the checkpoint's
    weights (strictly: every tensor must fit).

    Nothing in the run's files can run code: the config's targets are checked against the
    trusted set first (:mod:`vae_zoo.trust`), and the checkpoint is read with
    ``weights_only=True`` (:func:`vae_zoo.checkpointing.load_checkpoint`).

    Raises:
        UntrustedFileError: the config names an untrusted target, or the checkpoint holds
            objects other than tensors and plain values.
        ConfigError: missing checkpoint/config, data files that are not there, a model that
            does not fit the data, or weights that do not fit the model (e.g. after an override
            of ``model.latent_dim``).
    """
    run = check_run_config(cfg)
    datamodule: InMemoryDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    model: ELBOModule = instantiate(cfg.model)
    check_compatible(datamodule, model)
    checkpoint = load_checkpoint(run.checkpoint)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as error:
        raise ConfigError(
            f"The weights in {run.checkpoint} do not fit the model built from the run's config "
            f"({str(error).splitlines()[0]}). Leave the model settings as they were trained."
        ) from error
    model.on_load_checkpoint(checkpoint)
    datamodule.setup("test")
    return LoadedRun(model=model.to(device).eval(), datamodule=datamodule, run=run, device=device)


class SplitBatches:
    """Model-ready batches of one split, as often as needed, in the same order each time.

    Each pass yields what a Lightning step would get: the batch moved to ``device`` and passed
    through the datamodule's ``on_after_batch_transfer`` (uint8 -> float in [0, 1], fixed
    binarization and corruption of evaluation sets).

    Args:
        datamodule: the data, set up.
        split: ``test`` or ``val``.
        device: where the model is.
        max_examples: the first this many examples of the split only (None: all).
    """

    def __init__(self, datamodule: InMemoryDataModule, split: str, device: torch.device, max_examples: int | None = None):
        if split not in ("test", "val"):
            raise ConfigError(f"The split to evaluate must be test or val, got {split!r}.")
        self.datamodule, self.split, self.device = datamodule, split, device
        total = len(datamodule.splits[split]["image"])
        self.num_examples = total if max_examples is None else min(max_examples, total)
        if self.num_examples < 2:
            raise ConfigError(f"The {split} split has {self.num_examples} example(s) to evaluate; at least two are needed.")

    def __call__(self, max_examples: int | None = None) -> Iterator[dict[str, Tensor]]:
        """One pass over the first ``max_examples`` (default: all ``num_examples``) examples."""
        limit = self.num_examples if max_examples is None else min(max_examples, self.num_examples)
        loader = self.datamodule.test_dataloader() if self.split == "test" else self.datamodule.val_dataloader()
        seen = 0
        for batch in loader:
            if seen >= limit:
                break
            batch = {key: value[: limit - seen].to(self.device) for key, value in batch.items()}
            seen += len(batch["image"])
            yield self.datamodule.on_after_batch_transfer(batch, 0)

    def first(self) -> dict[str, Tensor]:
        """The first batch."""
        return next(iter(self()))


def target_of(batch: dict[str, Tensor]) -> Tensor:
    """The clean image a reconstruction is scored against (``target`` for denoising data)."""
    return batch.get("target", batch["image"])


# ------------------------------------------------------------------------------ the report
@dataclass
class EvaluationReport:
    """Named results with units and what they were measured with.

    Attributes:
        context: what was evaluated (checkpoint, model, data, split, counts).
        metrics: name -> ``{"value": float, "unit": str, ...details}`` in the order computed.
        skipped: name -> why it was not computed.
    """

    context: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: float, unit: str, **details: Any) -> None:
        self.metrics[name] = {"value": float(value), "unit": unit, **details}

    def skip(self, name: str, reason: str) -> None:
        self.skipped[name] = reason
        log.info("%s: not computed (%s)", name, reason)

    def values(self) -> dict[str, float]:
        """name -> value."""
        return {name: entry["value"] for name, entry in self.metrics.items()}

    def to_dict(self) -> dict[str, Any]:
        return {**self.context, "metrics": self.metrics, "skipped": self.skipped}

    def rows(self, notes: bool = True) -> list[tuple[str, ...]]:
        """(metric, value, unit, details[, note]) as text, for the Markdown and console tables."""
        rows = []
        for name, entry in self.metrics.items():
            details = ", ".join(f"{key}={_format(value)}" for key, value in entry.items() if key not in ("value", "unit", "note"))
            row = (name, _format(entry["value"]), entry["unit"], details)
            rows.append((*row, entry.get("note", "")) if notes else row)
        return rows

    def to_markdown(self) -> str:
        lines = [f"# Evaluation of {self.context['checkpoint']}", ""]
        lines += [f"- {key}: {value}" for key, value in self.context.items() if key != "checkpoint"]
        lines += ["", "| metric | value | unit | details | note |", "|---|---:|---|---|---|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows()]
        if self.skipped:
            lines += ["", "Not computed:", ""]
            lines += [f"- {name}: {reason}" for name, reason in self.skipped.items()]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``metrics.json`` and ``metrics.md`` into ``folder``; return their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, markdown_path = folder / "metrics.json", folder / "metrics.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        markdown_path.write_text(self.to_markdown())
        return json_path, markdown_path

    def print(self) -> None:
        """The table on the console (rich)."""
        from rich.console import Console
        from rich.table import Table

        title = f"vae_zoo evaluation ({self.context['split']} split, {self.context['num_examples']} examples)"
        table = Table(title=title, header_style="bold")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("unit")
        table.add_column("details", overflow="fold")
        for row in self.rows(notes=False):
            table.add_row(*row)
        console = Console()
        console.print(table)
        for name, reason in self.skipped.items():
            console.print(f"[dim]not computed: {name}: {reason}[/dim]", soft_wrap=True, highlight=False)


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 1e6):
        return str(int(value))
    if not math.isfinite(value):
        return str(value)
    return f"{value:.2f}" if abs(value) >= 100 else f"{value:.4g}"


# ----------------------------------------------------------------------------- the metrics
@torch.no_grad()
def add_elbo_and_reconstruction(report: EvaluationReport, model: ELBOModule, batches: SplitBatches) -> Tensor:
    """ELBO, reconstruction NLL, KL (one posterior sample per example, as the test step),
    bits/dim; reconstruction MSE, PSNR and SSIM of the mean decoding at the posterior mean.

    Returns:
        (N,) the ELBO of each example in nats, on the CPU.
    """
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
    from torchmetrics.regression import MeanSquaredError

    device = model.device
    mse = MeanSquaredError().to(device)
    psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)).to(device)  # per image, then the mean
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(device)
    elbo, recon, kl = [], [], []
    for batch in batches():
        terms = model.batch_terms(batch)
        elbo.append(terms.elbo_per_example.cpu())
        recon.append(-terms.log_px_z.cpu())
        kl.append(terms.kl_per_example_dim.sum(dim=1).cpu())
        reconstruction = model.reconstruct(batch["image"], model.condition(batch))
        target = target_of(batch)
        mse.update(reconstruction, target)
        psnr.update(reconstruction, target)
        ssim.update(reconstruction, target)
    elbo_per_example = torch.cat(elbo).double()
    mean_elbo = elbo_per_example.mean().item()
    report.add("elbo", mean_elbo, "nats/example", note="E_q[log p(x|z)] - KL, one posterior sample per example")
    report.add("recon", torch.cat(recon).double().mean().item(), "nats/example", note="-E_q[log p(x|z)]")
    kl_note = "KL(q(z|x) || N(0, I))" if model.capabilities.gaussian_posterior else "constant: log K per latent position"
    report.add("kl", torch.cat(kl).double().mean().item(), "nats/example", note=kl_note)
    report.add("bits_per_dim", bits_per_dim(-mean_elbo, model.data_dim), "bits/dim", note="-ELBO / (D ln 2)", D=model.data_dim)
    report.add("mse", mse.compute().item(), "per pixel", note="mean squared error, images in [0, 1]")
    report.add("psnr", psnr.compute().item(), "dB", note="per image (data range 1), averaged")
    report.add("ssim", ssim.compute().item(), "", note="structural similarity (Wang et al. 2004), in [-1, 1]")
    return elbo_per_example


def add_log_likelihood(
    report: EvaluationReport,
    model: ELBOModule,
    batches: SplitBatches,
    elbo_per_example: Tensor,
    num_samples: int,
    chunk_size: int,
    max_examples: int | None,
    generator: torch.Generator,
) -> None:
    """The importance-sampled test NLL (IWAE bound with ``num_samples`` = k; Burda et al.
    2016) in nats per example and bits/dim, on the first ``max_examples`` examples, with the
    ELBO of the same examples beside it (the bound is at least the ELBO in expectation)."""
    log_likelihood = importance_sampled_log_likelihoods(model, batches(max_examples), num_samples, chunk_size, generator).double()
    count = len(log_likelihood)
    nll = -log_likelihood.mean().item()
    standard_error = (log_likelihood.std() / math.sqrt(count)).item() if count > 1 else float("nan")
    elbo_same = elbo_per_example[:count].mean().item()
    report.add("nll", nll, "nats/example", k=num_samples, num_examples=count, standard_error=standard_error,
               elbo_same_examples=elbo_same, note="standard_error: over the examples (std / sqrt(n))")
    report.add("nll_bits_per_dim", bits_per_dim(nll, model.data_dim), "bits/dim", k=num_samples, num_examples=count)


@torch.no_grad()
def add_codebook_usage(report: EvaluationReport, model: ELBOModule, batches: SplitBatches) -> None:
    """VQ-VAE: perplexity exp(H) of the code usage over the split, codes no example maps to,
    and dead codes by the training criterion (EMA usage below the threshold)."""
    quantizer = model.quantizer
    counts = torch.zeros(quantizer.num_codes, dtype=torch.float64, device=model.device)
    for batch in batches():
        z_e = model.latent_code(batch["image"], model.condition(batch))  # (B, D, h, w)
        indices = quantizer.nearest(z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1]))
        counts += torch.bincount(indices, minlength=quantizer.num_codes).double()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    report.add("perplexity", entropy.exp().item(), "codes", of=quantizer.num_codes, note="exp(entropy of code usage on the split)")
    report.add("unused_codes", int((counts == 0).sum()), "codes", of=quantizer.num_codes)
    dead = int((quantizer.usage < quantizer.dead_code_threshold).sum())
    note = f"EMA usage below {quantizer.dead_code_threshold} at the end of training"
    report.add("dead_codes", dead, "codes", of=quantizer.num_codes, note=note)


def build_feature_extractor(node: DictConfig | None, channels: int | None, device: torch.device) -> nn.Module:
    """The FID feature extractor from its config node (done first, so that a missing Inception
    download fails before anything is computed)."""
    hint = (
        " With vae_zoo.evaluate: feature_extractor._target_=vae_zoo.metrics.fid.ClassifierFeatureExtractor.from_checkpoint "
        "+feature_extractor.path=<classifier.pt>, or evaluate.fid=false."
    )
    if node is None:
        raise ConfigError("evaluate.fid=true needs a feature_extractor node (or set evaluate.fid=false).")
    try:
        extractor = instantiate(node)
    except FeatureExtractorUnavailableError as error:
        raise FeatureExtractorUnavailableError(f"{error}{hint}") from error
    settings = getattr(extractor, "config", None)  # ClassifierFeatureExtractor records its shape
    expected = settings.get("in_channels") if isinstance(settings, dict) else None
    if expected is not None and channels is not None and expected != channels:
        raise ConfigError(f"The FID feature extractor takes {expected}-channel images but the data has {channels} channels.")
    return extractor.to(device)


@torch.no_grad()
def add_fid(
    report: EvaluationReport,
    model: ELBOModule,
    batches: SplitBatches,
    extractor: nn.Module,
    num_samples: int | None,
    seed: int,
) -> None:
    """FID of prior samples and of reconstructions against the split's images, with the
    extractor's name and the sample counts (FID is biased at small counts: compare equal ones)."""
    num_samples = batches.num_examples if num_samples is None else num_samples
    batch_size = batches.datamodule.eval_batch_size

    def prior_samples() -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(seed)
        for start in range(0, num_samples, batch_size):
            yield model.generate(**model.prior_sample(min(batch_size, num_samples - start), generator))

    def real() -> Iterator[Tensor]:
        return (target_of(batch) for batch in batches())

    def reconstructions() -> Iterator[Tensor]:
        return (model.reconstruct(batch["image"], model.condition(batch)) for batch in batches())

    for name, fake in (("fid_prior", prior_samples()), ("fid_recon", reconstructions())):
        result = frechet_distance(real(), fake, extractor)
        report.add(
            name, result.value, "", feature_extractor=result.feature_extractor, num_features=result.num_features,
            num_real=result.num_real, num_fake=result.num_fake,
        )


def add_disentanglement(report: EvaluationReport, model: ELBOModule, batches: SplitBatches, settings: DictConfig, seed: int) -> None:
    """MIG, the FactorVAE score and DCI from the posterior means and the ground-truth factors."""
    codes, factors = latent_codes_and_factors(model, batches())
    classifier = instantiate(settings.dci.classifier)  # a prototype, cloned per factor
    try:
        mig = mutual_information_gap(factors, codes, num_bins=settings.mig.num_bins)
        factor_vae = factor_vae_score(factors, codes, **settings.factor_vae, seed=seed)
        dci_scores = dci(factors, codes, classifier=classifier, test_fraction=settings.dci.test_fraction, seed=seed)
    except ValueError as error:  # e.g. a factor that takes one value on a tiny split
        report.skip("disentanglement", str(error))
        return
    count = len(codes)
    report.add("mig", mig.mig, "", num_examples=count, num_bins=settings.mig.num_bins, note="Chen et al. 2018")
    report.add(
        "factor_vae", factor_vae.eval_accuracy, "", num_examples=count, active_dims=factor_vae.num_active_dims,
        note="Kim & Mnih 2018, majority-vote accuracy",
    )
    classifier = type(classifier).__name__
    details = {"num_examples": count, "classifier": classifier}
    report.add("dci_disentanglement", dci_scores.disentanglement, "", **details, note="Eastwood & Williams 2018")
    report.add("dci_completeness", dci_scores.completeness, "", **details)
    report.add("dci_informativeness", dci_scores.informativeness_test, "", **details, note="held-out accuracy")


def _scores(model: ELBOModule, batches: Iterator[dict[str, Tensor]], score: str, num_samples: int, generator: torch.Generator) -> Tensor:
    """Per-example anomaly scores in nats (higher = more anomalous)."""
    if score == "negative_elbo":
        return negative_elbo_scores(model, batches, num_samples=num_samples).double()
    if score == "nll":
        return -importance_sampled_log_likelihoods(model, batches, num_samples=num_samples, generator=generator).double()
    raise ConfigError(f"evaluate.ood.score must be negative_elbo or nll, got {score!r}.")


def add_ood_detection(
    report: EvaluationReport, loaded: LoadedRun, batches: SplitBatches, settings: DictConfig, generator: torch.Generator
) -> None:
    """AUROC and AUPRC of the anomaly score, out-of-distribution (OOD) as the positive class.

    The OOD set is either ``settings.data`` (another data config; its ``settings.split``,
    in-distribution: the evaluated split) or ``settings.classes`` (labels under
    ``settings.label_key``: the evaluated split's examples with those labels are OOD, the rest
    in-distribution; meaningful for a model trained without them).
    """
    model = loaded.model
    if settings.data is not None and settings.classes is not None:
        raise ConfigError("Set one of evaluate.ood.data (another dataset) or evaluate.ood.classes (held-out labels), not both.")
    if settings.score == "nll" and not model.capabilities.importance_weights:
        raise ConfigError(f"evaluate.ood.score=nll needs a posterior with a density; {type(model).__name__} has none. Use negative_elbo.")
    if settings.classes is not None:
        first = batches.first()
        if settings.label_key not in first:
            raise ConfigError(f"evaluate.ood.classes needs labels under '{settings.label_key}', but the batches hold {sorted(first)}.")
        held_out = torch.as_tensor(list(settings.classes))
        labels = torch.cat([batch[settings.label_key].cpu() for batch in batches()])
        is_ood = torch.isin(labels, held_out)
        if is_ood.all() or not is_ood.any():
            raise ConfigError(
                f"evaluate.ood.classes={list(settings.classes)} leaves no examples on one side "
                f"(labels present: {labels.unique().tolist()})."
            )
        scores = _scores(model, batches(), settings.score, settings.num_samples, generator)
        in_scores, out_scores = scores[~is_ood], scores[is_ood]
        source = f"{batches.split} examples with {settings.label_key} in {list(settings.classes)}"
    else:
        ood_data: InMemoryDataModule = instantiate(settings.data)
        ood_data.prepare_data()
        check_compatible(ood_data, model)
        ood_data.setup("test")
        ood_batches = SplitBatches(ood_data, settings.split, loaded.device, settings.max_examples)
        in_scores = _scores(model, batches(), settings.score, settings.num_samples, generator)
        out_scores = _scores(model, ood_batches(), settings.score, settings.num_samples, generator)
        source = f"{type(ood_data).__name__} {settings.split} split"
    result = ood_detection_scores(in_scores, out_scores)
    details = {"score": settings.score, "ood": source, "num_in": result.num_in_distribution, "num_out": result.num_out_of_distribution}
    report.add("ood_auroc", result.auroc, "", **details)
    report.add("ood_auprc", result.auprc, "", **details)


# -------------------------------------------------------------------------------- evaluate
def evaluate(cfg: DictConfig) -> EvaluationReport:
    """Compute every metric that applies to the run's model and data (``cfg.evaluate`` says
    which and how), write ``metrics.json`` and ``metrics.md`` into ``cfg.paths.output_dir``
    and return the report.

    The order is: the FID feature extractor (a missing download fails before anything is
    computed), then model and data, then ELBO and reconstruction metrics, the
    importance-sampled NLL and active units (Gaussian posteriors) or codebook usage (VQ-VAE),
    FID, disentanglement (data with ``factors``), anomaly detection (an OOD set configured).
    """
    settings = cfg.evaluate
    run = check_run_config(cfg)  # before anything is built from it
    device = resolve_device(settings.device)
    L.seed_everything(settings.seed, verbose=False)
    extractor, fid_skipped = None, "evaluate.fid=false"
    if settings.fid:  # true: required; auto: when an extractor can be had (offline: no Inception weights), else one line why
        try:
            extractor = build_feature_extractor(cfg.get("feature_extractor"), cfg.data.get("channels"), device)
        except FeatureExtractorUnavailableError as error:
            if settings.fid != "auto":
                raise
            fid_skipped = f"no feature extractor available ({str(error).split('. ')[0]}); evaluate.fid=true makes it required"
    loaded = load_run(cfg, device)
    model = loaded.model
    batches = SplitBatches(loaded.datamodule, settings.split, device, settings.max_examples)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    report = EvaluationReport(
        context={
            "checkpoint": str(run.checkpoint),
            "run_dir": str(run.run_dir),
            "model": type(model).__name__,
            "data": type(loaded.datamodule).__name__,
            "split": settings.split,
            "num_examples": batches.num_examples,
            "data_dim": model.data_dim,
            "latent_dim": model.latent_dim,
            "device": str(device),
            "seed": settings.seed,
        }
    )
    log.info("Evaluating %s on %d %s examples (%s).", run.checkpoint, batches.num_examples, settings.split, device)
    elbo_per_example = add_elbo_and_reconstruction(report, model, batches)
    gaussian_only = f"{type(model).__name__} has a deterministic categorical posterior (no density q(z|x))"
    if not model.capabilities.importance_weights:
        report.skip("nll", f"{gaussian_only}; its ELBO is the bound reported")
    elif settings.num_importance_samples <= 0:
        report.skip("nll", "evaluate.num_importance_samples=0")
    else:
        log.info("Importance-sampled NLL, k=%d.", settings.num_importance_samples)
        add_log_likelihood(
            report, model, batches, elbo_per_example, settings.num_importance_samples,
            settings.importance_chunk_size, settings.nll_max_examples, generator,
        )
    if not model.capabilities.gaussian_posterior:
        report.skip("active_units", gaussian_only)
    else:
        report.add("active_units", active_units(model, batches()), "dimensions", of=model.latent_dim, threshold=ACTIVE_UNIT_THRESHOLD)
    if model.capabilities.codebook:
        add_codebook_usage(report, model, batches)
    if extractor is not None:
        log.info("FID with %s.", getattr(extractor, "name", type(extractor).__name__))
        add_fid(report, model, batches, extractor, settings.fid_num_samples, settings.seed)
    else:
        report.skip("fid", fid_skipped)
    if not settings.disentanglement:
        report.skip("disentanglement", "evaluate.disentanglement=false")
    elif "factors" not in batches.first():
        report.skip("disentanglement", f"{type(loaded.datamodule).__name__} has no ground-truth factors")
    else:
        log.info("Disentanglement (MIG, FactorVAE, DCI).")
        add_disentanglement(report, model, batches, settings, settings.seed)
    if settings.ood.data is None and settings.ood.classes is None:
        report.skip("ood", "no OOD set: set evaluate.ood.classes=[...] or evaluate.ood.data")
    else:
        add_ood_detection(report, loaded, batches, settings.ood, generator)
    output_dir = Path(cfg.paths.output_dir)
    json_path, markdown_path = report.write(output_dir)
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

    from vae_zoo.callbacks import Interpolations, LatentTraversals, PriorSamples

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
    trainer_view = SimpleNamespace(callback_metrics=_kl_per_dim_metrics(model, batches) if model.capabilities.gaussian_posterior else {})
    written = {}
    for callback in callbacks:
        if not callback.applies_to(model):
            log.info("%s: does not apply to %s, skipped.", callback.name, type(model).__name__)
            continue
        callback.fixed_batch = {key: value[: callback.num_images] for key, value in first.items()}
        with torch.no_grad():
            image = callback.render(trainer_view, model)  # the callbacks read only callback_metrics
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
        posterior = model.encode(batch["image"], model.condition(batch))
        total += model.kl_per_example_dim(posterior).double().sum(dim=0)
        count += len(batch["image"])
    return {f"val/kl_dim/{i}": value for i, value in enumerate((total / count).cpu())}
