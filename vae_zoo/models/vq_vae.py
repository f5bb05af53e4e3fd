"""VQ-VAE (van den Oord et al. 2017): a deterministic categorical posterior over K codes."""

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from vae_zoo.blocks.quantizers import VectorQuantizer
from vae_zoo.models.base import Capabilities, ELBOModule, ELBOTerms
from vae_zoo.nets import nets_must_fit


class VQVAE(ELBOModule):
    """Minimise

        recon + ||sg[z_e(x)] − e||² + β ||z_e(x) − sg[e]||²

    (the codebook term is replaced by EMA updates when ``quantizer.ema``), with β the
    ``commitment_cost`` (0.25). The posterior puts all its mass on the nearest code and the prior
    is uniform over K codes, so the KL is log K at each of the h·w latent positions and the
    ELBO is −(recon + h·w·log K) nats per example: comparable with the Gaussian variants'.

    Args:
        quantizer: the :class:`~vae_zoo.blocks.quantizers.VectorQuantizer` (its ``code_dim`` is the
            size of each latent vector).
        commitment_cost: β, the weight of the commitment loss.
        **kwargs: see :class:`~vae_zoo.models.base.ELBOModule`; ``encoder``/``decoder`` are
            grid nets (:class:`~vae_zoo.nets.ConvGridEncoder`, ...).
    """

    # the KL (h·w·log K) is a constant outside the loss: no schedule applies to it
    capabilities = Capabilities(gaussian_posterior=False, importance_weights=False, codebook=True, kl_schedules=())

    def __init__(self, quantizer: VectorQuantizer, commitment_cost: float = 0.25, **kwargs: Any):
        super().__init__(latent_dim=quantizer.code_dim, **kwargs)
        self.quantizer = quantizer
        self.commitment_cost = commitment_cost

    def build_nets(self, encoder: Callable[..., nn.Module], decoder: Callable[..., nn.Module]) -> None:
        channels, size, _ = self.image_shape
        with nets_must_fit("VQVAE", "grid nets (net=conv_grid)"):
            self.encoder = encoder(in_channels=channels, image_size=size, out_channels=self.latent_dim)
            self.decoder = decoder(
                in_channels=self.latent_dim, out_channels=self.likelihood.param_channels(channels), image_size=size
            )
        self.grid_size = self.encoder.grid_size

    def objective(self, terms: ELBOTerms) -> Tensor:
        return terms.recon + terms.extras["codebook_loss"] + self.commitment_cost * terms.extras["commitment_loss"]

    def elbo_terms(self, x: Tensor, condition: Tensor | None = None, target: Tensor | None = None) -> ELBOTerms:
        quantized = self.quantizer(self.encoder(x))
        x_params = self.decoder(quantized.z_q)
        positions = self.grid_size**2
        kl = torch.full((x.shape[0], positions), math.log(self.quantizer.num_codes), device=x.device)
        return ELBOTerms(
            log_px_z=self.likelihood.log_prob(x if target is None else target, x_params),
            kl_per_example_dim=kl,
            x_params=x_params,
            extras={
                "codebook_loss": quantized.codebook_loss.mean(),
                "commitment_loss": quantized.commitment_loss.mean(),
                "perplexity": quantized.perplexity,
                "dead_codes": quantized.dead_codes.float(),
            },
        )

    @torch.no_grad()
    def latent_code(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """The encoder's grid of vectors z_e(x), before quantisation (B, D, h, w)."""
        return self.encoder(x)

    @torch.no_grad()
    def decode_latent(self, code: Tensor, condition: Tensor | None = None) -> Tensor:
        """Quantise a grid of vectors to its nearest codes, then decode."""
        return self.likelihood.mean(self.decoder(self.quantizer(code).z_q))

    def prior_sample(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Code indices drawn uniformly: the VQ-VAE's prior, as vae_zoo fits no learned prior over the codes (yet)."""
        shape = (num_samples, self.grid_size, self.grid_size)
        return {"z": torch.randint(0, self.quantizer.num_codes, shape, generator=generator)}

    @torch.no_grad()
    def generate(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """Decode a grid of code indices (B, h, w)."""
        return self.likelihood.mean(self.decoder(self.quantizer.lookup(z.to(self.device))))
