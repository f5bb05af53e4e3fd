"""The vanilla VAE (Kingma & Welling 2014; Rezende et al. 2014)."""

from vae_zoo.models.base import ELBOModule


class VAE(ELBOModule):
    """Maximise the evidence lower bound

        ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I)),

    i.e. minimise reconstruction NLL + KL, both in nats per example. With the default
    (constant) schedule the KL penalty is the plain KL; a warm-up, cyclical annealing or free
    bits (``model.kl_schedule``) re-weight it during training only.
    """
