"""The evaluation metrics that need something beyond the run itself: a feature extractor (FID)
or another data set (out-of-distribution detection). Listed in ``conf/evaluate.yaml`` beside the
others (:mod:`vae_zoo.metrics.suite`, whose :class:`~vae_zoo.metrics.suite.EvaluationMetric`
contract they follow)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from vae_zoo.data.splits import SplitBatches, target_of
from vae_zoo.errors import ConfigError
from vae_zoo.metrics.anomaly import negative_elbo_scores, ood_detection_scores
from vae_zoo.metrics.fid import FeatureExtractorUnavailableError, frechet_distance
from vae_zoo.metrics.likelihood import importance_sampled_log_likelihoods
from vae_zoo.metrics.suite import EvaluationContext, EvaluationMetric

if TYPE_CHECKING:
    from vae_zoo.metrics.report import EvaluationReport

log = logging.getLogger("vae_zoo.metrics.suite")


class FID(EvaluationMetric):
    """FID of prior samples and of reconstructions against the split's images (torchmetrics),
    with the extractor's name and the sample counts (FID is biased at small counts: compare
    equal ones).

    Args:
        enabled: ``auto`` (computed when the extractor can be built, e.g. Inception's weights
            cached or downloadable; else skipped with one line), ``true`` (required: an
            unavailable extractor stops before any work) or ``false``.
        feature_extractor: config node of a module mapping (N, C, H, W) images in [0, 1] to
            (N, F) features.
        num_samples: prior samples (None: as many as real images).
        seed: seeds the prior draws.
    """

    name = "fid"
    HINT = (
        " With vae_zoo.evaluate: feature_extractor._target_=vae_zoo.metrics.fid.ClassifierFeatureExtractor.from_checkpoint "
        "+feature_extractor.path=<classifier.pt> (made by python -m vae_zoo.fid_classifier), or evaluate.fid=false."
    )

    def __init__(
        self,
        enabled: bool | str = "auto",
        feature_extractor: DictConfig | None = None,
        num_samples: int | None = None,
        seed: int = 0,
    ):
        self.enabled, self.node, self.num_samples, self.seed = enabled, feature_extractor, num_samples, seed
        self.extractor: nn.Module | None = None
        self.unavailable = "evaluate.fid=false"

    def prepare(self, device: torch.device, channels: int | None) -> None:
        from vae_zoo.support.instantiation import instantiate

        if not self.enabled:
            return
        if self.node is None:
            raise ConfigError("evaluate.fid=true needs a feature_extractor node (or set evaluate.fid=false).")
        try:
            extractor = instantiate(self.node)
        except FeatureExtractorUnavailableError as error:
            if self.enabled != "auto":
                raise FeatureExtractorUnavailableError(f"{error}{self.HINT}") from error
            self.unavailable = (
                f"no feature extractor available ({str(error).split('. ')[0]}); evaluate.fid=true makes it required"
            )
            return
        settings = getattr(extractor, "config", None)  # ClassifierFeatureExtractor records its shape
        expected = settings.get("in_channels") if isinstance(settings, dict) else None
        if expected is not None and channels is not None and expected != channels:
            raise ConfigError(
                f"The FID feature extractor takes {expected}-channel images but the data has {channels} channels."
            )
        self.extractor = extractor.to(device)

    def skip_reason(self, context: EvaluationContext) -> str | None:
        return None if self.extractor is not None else self.unavailable

    @torch.no_grad()
    def compute(self, context: EvaluationContext, report: EvaluationReport) -> None:
        log.info("FID with %s.", getattr(self.extractor, "name", type(self.extractor).__name__))
        model, batches = context.model, context.batches
        num_samples = batches.num_examples if self.num_samples is None else self.num_samples
        batch_size = batches.datamodule.eval_batch_size

        def prior_samples() -> Iterator[Tensor]:
            generator = torch.Generator().manual_seed(self.seed)
            for start in range(0, num_samples, batch_size):
                yield model.generate(**model.prior_sample(min(batch_size, num_samples - start), generator))

        def real() -> Iterator[Tensor]:
            return (target_of(batch) for batch in batches())

        def reconstructions() -> Iterator[Tensor]:
            return (model.reconstruct(batch["image"], model.condition(batch)) for batch in batches())

        for name, fake in (("fid_prior", prior_samples()), ("fid_recon", reconstructions())):
            result = frechet_distance(real(), fake, self.extractor)
            report.add(
                name,
                result.value,
                "",
                feature_extractor=result.feature_extractor,
                num_features=result.num_features,
                num_real=result.num_real,
                num_fake=result.num_fake,
            )


class OODDetection(EvaluationMetric):
    """AUROC and AUPRC of a per-example anomaly score, out-of-distribution (OOD) as the positive
    class. The OOD set is either ``data`` (another data config; its ``split``; in-distribution:
    the evaluated split) or ``classes`` (labels under ``label_key``: the evaluated split's
    examples with those labels are OOD, the rest in-distribution; meaningful for a model trained
    without them). ``score``: ``negative_elbo`` or ``nll`` (importance sampled with
    ``num_samples``), nats per example."""

    name = "ood"

    def __init__(
        self,
        classes: list | None = None,
        label_key: str = "label",
        data: DictConfig | None = None,
        split: str = "test",
        max_examples: int | None = None,
        score: str = "negative_elbo",
        num_samples: int = 1,
    ):
        self.classes, self.label_key, self.data, self.split = classes, label_key, data, split
        self.max_examples, self.score, self.num_samples = max_examples, score, num_samples

    def skip_reason(self, context: EvaluationContext) -> str | None:
        if self.data is None and self.classes is None:
            return "no OOD set: set evaluate.ood.classes=[...] or evaluate.ood.data"
        return None

    def _scores(self, context: EvaluationContext, batches: Iterator[dict[str, Tensor]]) -> Tensor:
        """Per-example anomaly scores in nats (higher = more anomalous)."""
        if self.score == "negative_elbo":
            return negative_elbo_scores(context.model, batches, num_samples=self.num_samples).double()
        return -importance_sampled_log_likelihoods(
            context.model, batches, num_samples=self.num_samples, generator=context.generator
        ).double()

    def compute(self, context: EvaluationContext, report: EvaluationReport) -> None:
        from vae_zoo.models.data_fit import check_compatible
        from vae_zoo.support.instantiation import instantiate

        model, batches = context.model, context.batches
        if self.data is not None and self.classes is not None:
            raise ConfigError(
                "Set one of evaluate.ood.data (another dataset) or evaluate.ood.classes (held-out labels), not both."
            )
        if self.score not in ("negative_elbo", "nll"):
            raise ConfigError(f"evaluate.ood.score must be negative_elbo or nll, got {self.score!r}.")
        if self.score == "nll" and not model.capabilities.importance_weights:
            raise ConfigError(
                f"evaluate.ood.score=nll needs a posterior with a density; {type(model).__name__} has none. Use negative_elbo."
            )
        if self.classes is not None:
            first = batches.first()
            if self.label_key not in first:
                raise ConfigError(
                    f"evaluate.ood.classes needs labels under '{self.label_key}', but the batches hold {sorted(first)}."
                )
            held_out = torch.as_tensor(list(self.classes))
            labels = torch.cat([batch[self.label_key].cpu() for batch in batches()])
            is_ood = torch.isin(labels, held_out)
            if is_ood.all() or not is_ood.any():
                raise ConfigError(
                    f"evaluate.ood.classes={list(self.classes)} leaves no examples on one side "
                    f"(labels present: {labels.unique().tolist()})."
                )
            scores = self._scores(context, batches())
            in_scores, out_scores = scores[~is_ood], scores[is_ood]
            source = f"{batches.split} examples with {self.label_key} in {list(self.classes)}"
        else:
            ood_data = instantiate(self.data)
            ood_data.prepare_data()
            check_compatible(ood_data, model)
            ood_data.setup("test")
            ood_batches = SplitBatches(ood_data, self.split, context.device, self.max_examples)
            in_scores = self._scores(context, batches())
            out_scores = self._scores(context, ood_batches())
            source = f"{type(ood_data).__name__} {self.split} split"
        result = ood_detection_scores(in_scores, out_scores)
        details = {
            "score": self.score,
            "ood": source,
            "num_in": result.num_in_distribution,
            "num_out": result.num_out_of_distribution,
        }
        report.add("ood_auroc", result.auroc, "", **details)
        report.add("ood_auprc", result.auprc, "", **details)
