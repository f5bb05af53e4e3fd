"""Numbers that describe a trained model: torchmetrics where it has them (FID, PSNR, SSIM,
AUROC), our own code where it does not (each module says why). The evaluation report's metric
objects are in :mod:`vae_zoo.metrics.suite`."""

from vae_zoo.blocks.stats import ExampleMeans, bits_per_dim, variance_from_means
from vae_zoo.metrics.active_units import ACTIVE_UNIT_THRESHOLD, active_units, posterior_mean_variance
from vae_zoo.metrics.anomaly import OODDetectionScores, negative_elbo_scores, ood_detection_scores
from vae_zoo.metrics.dci import DCIScores, dci
from vae_zoo.metrics.disentanglement import (
    FactorVAEScore,
    MIGScore,
    factor_vae_score,
    latent_codes_and_factors,
    mutual_information_gap,
)
from vae_zoo.metrics.fid import (
    ClassifierFeatureExtractor,
    FeatureExtractorUnavailableError,
    FIDResult,
    frechet_distance,
    inception_v3_features,
)
from vae_zoo.metrics.likelihood import importance_sampled_log_likelihood, importance_sampled_log_likelihoods

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "active_units",
    "posterior_mean_variance",
    "ExampleMeans",
    "variance_from_means",
    "bits_per_dim",
    "importance_sampled_log_likelihood",
    "importance_sampled_log_likelihoods",
    "MIGScore",
    "FactorVAEScore",
    "DCIScores",
    "mutual_information_gap",
    "factor_vae_score",
    "dci",
    "latent_codes_and_factors",
    "FIDResult",
    "ClassifierFeatureExtractor",
    "FeatureExtractorUnavailableError",
    "frechet_distance",
    "inception_v3_features",
    "OODDetectionScores",
    "ood_detection_scores",
    "negative_elbo_scores",
]
