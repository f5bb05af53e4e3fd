"""VAE variants, one file each, on the shared ELBO base (:mod:`vae_zoo.models.base`)."""

from vae_zoo.models.base import ELBOModule, ELBOTerms
from vae_zoo.models.vae import VAE

__all__ = ["ELBOModule", "ELBOTerms", "VAE"]
