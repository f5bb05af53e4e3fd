"""β-VAE (Higgins et al. 2017) and its controlled-capacity form (Burgess et al. 2018)."""

from typing import Any

from vae_zoo.errors import check_non_negative
from vae_zoo.models.base import ELBOModule


class BetaVAE(ELBOModule):
    """Minimise

        recon + β · KL                  (Higgins et al. 2017; β > 1 favours disentangling)
        recon + γ · |KL − C(t)|         (Burgess et al. 2018; set model.kl_schedule.capacity_max)

    in nats per example. The logged ``elbo``, ``recon`` and ``kl`` stay the unweighted terms,
    so ``val/elbo`` compares with every other variant.

    Args:
        beta: the weight β on the KL term.
        **kwargs: see :class:`~vae_zoo.models.base.ELBOModule` (``kl_schedule`` adds warm-up,
            cyclical annealing, free bits, or the capacity objective).
    """

    def __init__(self, beta: float = 4.0, **kwargs: Any):
        check_non_negative(beta=beta)
        super().__init__(**kwargs)
        self.beta = beta
