"""VAE variants, one file each, on the shared ELBO base (:mod:`vae_zoo.models.base`)."""

from vae_zoo.models.base import ELBOModule
from vae_zoo.models.beta_tcvae import BetaTCVAE
from vae_zoo.models.beta_vae import BetaVAE
from vae_zoo.models.cvae import ConditionalVAE
from vae_zoo.models.dip_vae import DIPVAE
from vae_zoo.models.factor_vae import FactorVAE
from vae_zoo.models.hvae import HierarchicalVAE
from vae_zoo.models.iwae import IWAE
from vae_zoo.models.terms import Capabilities, ELBOTerms, ImportanceSamples
from vae_zoo.models.vae import VAE
from vae_zoo.models.vq_prior import LearnedPriorVQVAE
from vae_zoo.models.vq_vae import VQVAE

__all__ = [
    "Capabilities",
    "ELBOModule",
    "ELBOTerms",
    "ImportanceSamples",
    "VAE",
    "BetaVAE",
    "ConditionalVAE",
    "VQVAE",
    "LearnedPriorVQVAE",
    "IWAE",
    "BetaTCVAE",
    "FactorVAE",
    "DIPVAE",
    "HierarchicalVAE",
]
