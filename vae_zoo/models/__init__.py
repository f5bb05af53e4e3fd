"""VAE variants, one file each, on the shared ELBO base (:mod:`vae_zoo.models.base`)."""

from vae_zoo.models.base import ELBOModule, ELBOTerms
from vae_zoo.models.beta_vae import BetaVAE
from vae_zoo.models.cvae import ConditionalVAE
from vae_zoo.models.vae import VAE
from vae_zoo.models.vq_vae import VQVAE

__all__ = ["ELBOModule", "ELBOTerms", "VAE", "BetaVAE", "ConditionalVAE", "VQVAE"]
