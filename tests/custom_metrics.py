"""A user's own evaluation metric, as a test adds one through config alone (test_evaluate.py)."""

from vae_zoo.metrics.suite import EvaluationMetric


class MeanIntensity(EvaluationMetric):
    """The mean pixel value of the evaluated split, in [0, 1]; applies to data with images."""

    name = "mean_intensity"

    def skip_reason(self, context):
        return None if "image" in context.batches.first() else "no images"

    def compute(self, context, report):
        total = count = 0
        for batch in context.batches():
            total += batch["image"].double().sum().item()
            count += batch["image"].numel()
        report.add("mean_intensity", total / count, "", num_examples=context.batches.num_examples)


class NeedsLabelsItHasNot(EvaluationMetric):
    name = "needs_colour"

    def skip_reason(self, context):
        return "the images are grey"
