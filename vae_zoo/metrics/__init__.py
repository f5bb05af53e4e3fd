"""Numbers that describe a trained model (computed by hand only where no library has them)."""

from vae_zoo.metrics.active_units import ACTIVE_UNIT_THRESHOLD, active_units, posterior_mean_variance
from vae_zoo.metrics.example_means import ExampleMeans, variance_from_means

__all__ = ["ACTIVE_UNIT_THRESHOLD", "active_units", "posterior_mean_variance", "ExampleMeans", "variance_from_means"]
