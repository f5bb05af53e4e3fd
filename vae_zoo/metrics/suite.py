"""The evaluation suite: one small object per metric, listed in ``conf/evaluate.yaml``.

Each :class:`EvaluationMetric` has one job. :meth:`~EvaluationMetric.skip_reason` says whether it
applies to this model and data (None) or why not (one line in the report). :meth:`~EvaluationMetric.compute`
adds its rows to the report, each with its unit and what it was measured on. ``evaluate``
(:func:`vae_zoo.evaluation.runner.evaluate`) only builds them from the config, loads the run and
collects the rows, so a metric of your own is one class and one config entry::

    python -m vae_zoo.evaluate ckpt_path=<run> '+metrics.mine={_target_: my_pkg.MyMetric}' trusted_targets=[my_pkg]

Units as everywhere in vae_zoo: nats per example (summed over the D = C*H*W data dimensions and
the latent dimensions, averaged over examples), ``bits/dim = nats / (D ln 2)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from vae_zoo.blocks.stats import bits_per_dim
from vae_zoo.data.splits import SplitBatches, target_of
from vae_zoo.errors import ConfigError
from vae_zoo.metrics.active_units import ACTIVE_UNIT_THRESHOLD, active_units
from vae_zoo.metrics.dci import dci
from vae_zoo.metrics.disentanglement import (
    MIG_NUM_BINS,
    factor_vae_score,
    latent_codes_and_factors,
    mutual_information_gap,
)
from vae_zoo.metrics.likelihood import PRECISIONS, importance_sampled_log_likelihoods
from vae_zoo.metrics.progress import EvaluationProgress

if TYPE_CHECKING:
    from vae_zoo.data.base import InMemoryDataModule
    from vae_zoo.metrics.report import EvaluationReport
    from vae_zoo.models.base import ELBOModule

log = logging.getLogger(__name__)


@dataclass
class EvaluationContext:
    """What every metric computes from: the loaded model (eval mode), its data and the split's
    batches, a seeded generator, and ``shared``: results one metric leaves for another (the ELBO
    metric leaves ``elbo_per_example``, which the NLL reports beside itself)."""

    model: ELBOModule
    datamodule: InMemoryDataModule
    batches: SplitBatches
    device: torch.device
    seed: int
    generator: torch.Generator
    shared: dict[str, Any] = field(default_factory=dict)


class EvaluationMetric:
    """One metric of the report. Subclasses set ``name`` and implement :meth:`compute`."""

    name = "metric"

    def prepare(self, device: torch.device, channels: int | None) -> None:
        """Called before the run is loaded: fail now (or decide to skip) for what can be known
        without it, e.g. a feature extractor that cannot be built."""

    def skip_reason(self, context: EvaluationContext) -> str | None:
        """None when the metric applies to this model and data, else one line saying why not."""
        return None

    def compute(self, context: EvaluationContext, report: EvaluationReport) -> None:
        raise NotImplementedError


def _deterministic_posterior(model: ELBOModule) -> str:
    return f"{type(model).__name__} has a deterministic categorical posterior (no density q(z|x))"


class ELBOAndReconstruction(EvaluationMetric):
    """ELBO, reconstruction NLL, KL (one posterior sample per example, as the test step),
    bits/dim; reconstruction MSE, PSNR and SSIM (torchmetrics) of the mean decoding at the
    posterior mean."""

    name = "elbo"

    @torch.no_grad()
    def compute(self, context: EvaluationContext, report: EvaluationReport) -> None:
        from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
        from torchmetrics.regression import MeanSquaredError

        model, device = context.model, context.device
        mse = MeanSquaredError().to(device)
        psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)).to(device)  # per image, then the mean
        ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(device)
        elbo, recon, kl = [], [], []
        for batch in context.batches():
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
        context.shared["elbo_per_example"] = elbo_per_example
        mean_elbo = elbo_per_example.mean().item()
        report.add("elbo", mean_elbo, "nats/example", note="E_q[log p(x|z)] - KL, one posterior sample per example")
        report.add("recon", torch.cat(recon).double().mean().item(), "nats/example", note="-E_q[log p(x|z)]")
        if model.capabilities.learned_prior:
            kl_note = "-log p(codes) under the learned prior"
        elif model.capabilities.gaussian_posterior:
            kl_note = "KL(q(z|x) || N(0, I))"
        else:
            kl_note = "constant: log K per latent position"
        report.add("kl", torch.cat(kl).double().mean().item(), "nats/example", note=kl_note)
        report.add(
            "bits_per_dim",
            bits_per_dim(-mean_elbo, model.data_dim),
            "bits/dim",
            note="-ELBO / (D ln 2)",
            D=model.data_dim,
        )
        report.add("mse", mse.compute().item(), "per pixel", note="mean squared error, images in [0, 1]")
        report.add("psnr", psnr.compute().item(), "dB", note="per image (data range 1), averaged")
        report.add("ssim", ssim.compute().item(), "", note="structural similarity (Wang et al. 2004), in [-1, 1]")


class ImportanceSampledNLL(EvaluationMetric):
    """The importance-sampled test NLL: the IWAE bound with k = ``num_samples`` (Burda et al.
    2016), in nats per example and bits/dim, on the first ``max_examples`` examples, with its
    standard error over those examples and the ELBO of the same examples beside it."""

    name = "nll"

    def __init__(
        self, num_samples: int = 1000, chunk_size: int = 100, max_examples: int | None = None, precision: str = "32"
    ):
        if str(precision) not in PRECISIONS:
            raise ConfigError(
                f"evaluate.nll_precision must be one of {', '.join(PRECISIONS)}, got {precision!r} (32: float32 "
                "throughout; bf16: the decoder under bfloat16 autocast, faster, a few hundredths of a nat apart)."
            )
        self.num_samples, self.chunk_size, self.max_examples = num_samples, chunk_size, max_examples
        self.precision = str(precision)

    def skip_reason(self, context: EvaluationContext) -> str | None:
        if not context.model.capabilities.importance_weights:
            return f"{_deterministic_posterior(context.model)}; its ELBO is the bound reported"
        return "evaluate.num_importance_samples=0" if self.num_samples <= 0 else None

    def compute(self, context: EvaluationContext, report: EvaluationReport) -> None:
        model = context.model
        total = context.batches.num_examples
        examples = total if self.max_examples is None else min(self.max_examples, total)
        work = f"Importance-sampled NLL, k={self.num_samples}, {examples} examples"
        with EvaluationProgress(work, examples * self.num_samples, "decodes") as progress:
            log_likelihood = importance_sampled_log_likelihoods(
                model,
                context.batches(self.max_examples),
                self.num_samples,
                self.chunk_size,
                context.generator,
                progress.advance,
                self.precision,
            ).double()
        count = len(log_likelihood)
        nll = -log_likelihood.mean().item()
        standard_error = (log_likelihood.std() / math.sqrt(count)).item() if count > 1 else float("nan")
        beside = {}
        if "elbo_per_example" in context.shared:
            beside["elbo_same_examples"] = context.shared["elbo_per_example"][:count].mean().item()
        report.add(
            "nll",
            nll,
            "nats/example",
            k=self.num_samples,
            num_examples=count,
            standard_error=standard_error,
            decoder_precision=self.precision,
            **beside,
            note="standard_error: over the examples (std / sqrt(n))",
        )
        report.add(
            "nll_bits_per_dim", bits_per_dim(nll, model.data_dim), "bits/dim", k=self.num_samples, num_examples=count
        )


class ActiveUnits(EvaluationMetric):
    """Active units (Burda et al. 2016): latent dimensions with Cov_x E_q[z_u] above the threshold."""

    name = "active_units"

    def skip_reason(self, context: EvaluationContext) -> str | None:
        return None if context.model.capabilities.gaussian_posterior else _deterministic_posterior(context.model)

    def compute(self, context: EvaluationContext, report: EvaluationReport) -> None:
        model = context.model
        report.add(
            "active_units",
            active_units(model, context.batches()),
            "dimensions",
            of=model.latent_dim,
            threshold=ACTIVE_UNIT_THRESHOLD,
        )


class CodebookUsage(EvaluationMetric):
    """VQ-VAE: perplexity exp(H) of the code usage over the split, codes no example maps to,
    and dead codes by the training criterion (EMA usage below the threshold)."""

    name = "codebook_usage"

    def skip_reason(self, context: EvaluationContext) -> str | None:
        return None if context.model.capabilities.codebook else f"{type(context.model).__name__} has no codebook"

    @torch.no_grad()
    def compute(self, context: EvaluationContext, report: EvaluationReport) -> None:
        model = context.model
        quantizer = model.quantizer
        counts = torch.zeros(quantizer.num_codes, dtype=torch.float64, device=model.device)
        for batch in context.batches():
            z_e = model.latent_code(batch["image"], model.condition(batch))  # (B, D, h, w)
            indices = quantizer.nearest(z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1]))
            counts += torch.bincount(indices, minlength=quantizer.num_codes).double()
        probs = counts / counts.sum()
        entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
        report.add(
            "perplexity",
            entropy.exp().item(),
            "codes",
            of=quantizer.num_codes,
            note="exp(entropy of code usage on the split)",
        )
        report.add("unused_codes", int((counts == 0).sum()), "codes", of=quantizer.num_codes)
        dead = int((quantizer.usage < quantizer.dead_code_threshold).sum())
        note = f"EMA usage below {quantizer.dead_code_threshold} at the end of training"
        report.add("dead_codes", dead, "codes", of=quantizer.num_codes, note=note)


class Disentanglement(EvaluationMetric):
    """MIG (Chen et al. 2018), the FactorVAE score (Kim & Mnih 2018) and DCI (Eastwood &
    Williams 2018) from the posterior means and the data's ground-truth ``factors``.

    Args:
        enabled: false skips it.
        mig, factor_vae, dci: their settings (``conf/evaluate.yaml``); ``dci.classifier`` is a
            config node of the per-factor classifier (cloned per factor).
        seed: seeds the FactorVAE votes and the DCI split.
    """

    name = "disentanglement"

    def __init__(
        self,
        enabled: bool = True,
        mig: Mapping | None = None,
        factor_vae: Mapping | None = None,
        dci: Mapping | None = None,
        seed: int = 0,
    ):
        self.enabled, self.seed = enabled, seed
        self.mig, self.factor_vae, self.dci = dict(mig or {}), dict(factor_vae or {}), dci or {}

    def skip_reason(self, context: EvaluationContext) -> str | None:
        if not self.enabled:
            return "evaluate.disentanglement=false"
        if not context.model.capabilities.gaussian_posterior:  # a code grid: thousands of "dimensions", minutes of DCI
            return f"{_deterministic_posterior(context.model)}: MIG, FactorVAE and DCI score the dimensions of a Gaussian code"
        if "factors" not in context.batches.first():
            return f"{type(context.datamodule).__name__} has no ground-truth factors"
        return None

    def compute(self, context: EvaluationContext, report: EvaluationReport) -> None:
        from vae_zoo.support.instantiation import instantiate

        log.info("Disentanglement (MIG, FactorVAE, DCI).")
        codes, factors = latent_codes_and_factors(context.model, context.batches())
        classifier = instantiate(self.dci["classifier"])  # a prototype, cloned per factor
        num_bins = self.mig.get("num_bins", MIG_NUM_BINS)
        dci_settings = {key: value for key, value in self.dci.items() if key != "classifier"}
        try:
            mig = mutual_information_gap(factors, codes, num_bins=num_bins)
            factor_vae = factor_vae_score(factors, codes, **self.factor_vae, seed=self.seed)
            dci_scores = dci(factors, codes, classifier=classifier, **dci_settings, seed=self.seed)
        except ValueError as error:  # e.g. a factor that takes one value on a tiny split
            report.skip(self.name, str(error))
            return
        count = len(codes)
        report.add("mig", mig.mig, "", num_examples=count, num_bins=num_bins, note="Chen et al. 2018")
        report.add(
            "factor_vae",
            factor_vae.eval_accuracy,
            "",
            num_examples=count,
            active_dims=factor_vae.num_active_dims,
            note="Kim & Mnih 2018, majority-vote accuracy",
        )
        details = {"num_examples": count, "classifier": type(classifier).__name__}
        report.add("dci_disentanglement", dci_scores.disentanglement, "", **details, note="Eastwood & Williams 2018")
        report.add("dci_completeness", dci_scores.completeness, "", **details)
        report.add("dci_informativeness", dci_scores.informativeness_test, "", **details, note="held-out accuracy")
