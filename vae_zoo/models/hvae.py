"""A hierarchical VAE with L Gaussian layers: the ladder VAE of Sønderby et al. (2016)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vae_zoo.blocks.likelihoods import DiagonalGaussian
from vae_zoo.blocks.stats import repeat_batch
from vae_zoo.errors import ConfigError
from vae_zoo.models.base import Capabilities, ELBOModule, ELBOTerms, ImportanceSamples

NORMS = ("batch", "weight", "none")


@dataclass
class Layer:
    """One stochastic layer of a top-down pass: its prior p(z_l | z_l+1), its posterior
    q(z_l | z_l+1, x) (None when sampling from the prior) and the z_l drawn."""

    prior: DiagonalGaussian
    posterior: DiagonalGaussian | None
    z: Tensor


def _block(sizes: Sequence[int], norm: str) -> nn.Sequential:
    """Linear layers of ``sizes``, each followed by the norm and a SiLU (Sønderby et al.: two
    deterministic layers per stochastic layer, batch norm; weight norm as in Kingma et al. 2016)."""
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes[:-1], sizes[1:]):
        linear = nn.Linear(width_in, width_out)
        if norm == "weight":
            linear = nn.utils.parametrizations.weight_norm(linear)
        layers.append(linear)
        if norm == "batch":
            layers.append(nn.BatchNorm1d(width_out))
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def precision_weighted(bottom_up: DiagonalGaussian, prior: DiagonalGaussian) -> DiagonalGaussian:
    """The ladder VAE's posterior (Sønderby et al. 2016, eq. 19-20): the product of the
    bottom-up Gaussian and the top-down prior, 1/s^2 = 1/s_b^2 + 1/s_p^2, mu = s^2 (mu_b/s_b^2 + mu_p/s_p^2)."""
    precision_b, precision_p = torch.exp(-bottom_up.logvar), torch.exp(-prior.logvar)
    logvar = -torch.logaddexp(-bottom_up.logvar, -prior.logvar)
    mu = (bottom_up.mu * precision_b + prior.mu * precision_p) * torch.exp(logvar)
    return DiagonalGaussian(mu, logvar)


class HierarchicalVAE(ELBOModule):
    """Maximise the ELBO of a top-down hierarchy z_L -> ... -> z_1 -> x,

        p(x, z) = p(x | z_1) p(z_L) prod_{l<L} p(z_l | z_l+1),
        q(z | x) = q(z_L | x) prod_{l<L} q(z_l | z_l+1, x),
        ELBO = E_q[log p(x | z_1)] - sum_l E_q[KL(q(z_l | z_l+1, x) || p(z_l | z_l+1))],

    with the ladder VAE's inference (Sønderby et al. 2016): a bottom-up pass gives a Gaussian
    per layer from x, and the posterior at layer l is its precision-weighted product with the
    top-down prior p(z_l | z_l+1). The posterior thus shares the generative path's top-down
    networks; chosen over NVAE's residual cells (Vahdat & Kautz 2020) because its MLP form is what
    MNIST likelihood tables report, and it trains in minutes on a CPU. Each layer's KL is analytic
    given the sampled layer above (one sample of the path), nats per example: ``val/kl_layer/<l>``
    (l = 1 is the bottom), and ``val/kl_dim/<i>`` over all layers, bottom first.

    Args:
        latent_dims: size of z_1 ... z_L, bottom first (e.g. [32, 16]: two layers).
        hidden: width of the deterministic blocks at each layer, bottom first (len L).
        norm: ``batch`` (Sønderby et al.), ``weight`` (Salimans & Kingma 2016) or ``none``.
        **kwargs: see :class:`~vae_zoo.models.base.ELBOModule` (``likelihood``, image shape,
            optimizer, ``kl_schedule``: warm-up and free bits act on every layer's dimensions).
    """

    def __init__(self, latent_dims: Sequence[int], hidden: Sequence[int], norm: str = "batch", **kwargs: Any):
        latent_dims, hidden = [int(d) for d in latent_dims], [int(h) for h in hidden]
        if len(latent_dims) < 1 or len(hidden) != len(latent_dims) or min(latent_dims + hidden) < 1:
            raise ConfigError(
                f"model.latent_dims and model.hidden need one positive size per layer, got {latent_dims} and {hidden}."
            )
        if norm not in NORMS:
            raise ConfigError(f"model.norm must be one of {NORMS}, got {norm!r}.")
        self.latent_dims, self.hidden, self.norm = latent_dims, hidden, norm
        self.capabilities = Capabilities(stochastic_layers=len(latent_dims))
        super().__init__(encoder=None, decoder=None, latent_dim=sum(latent_dims), **kwargs)

    def build_nets(self, encoder: Any, decoder: Any) -> None:
        """Bottom-up blocks d_l and their Gaussian heads; top-down blocks from z_l+1 to the prior
        of z_l; the decoder from z_1 to the parameters of p(x | z_1)."""
        channels, size, _ = self.image_shape
        pixels, L = channels * size * size, len(self.latent_dims)
        widths = [pixels, *self.hidden]
        self.bottom_up = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Flatten() if i == 0 else nn.Identity(),
                    _block([widths[i], widths[i + 1], widths[i + 1]], self.norm),
                )
                for i in range(L)
            ]
        )
        self.bottom_up_heads = nn.ModuleList([nn.Linear(self.hidden[i], 2 * self.latent_dims[i]) for i in range(L)])
        self.top_down = nn.ModuleList(
            [_block([self.latent_dims[i + 1], self.hidden[i], self.hidden[i]], self.norm) for i in range(L - 1)]
        )
        self.prior_heads = nn.ModuleList([nn.Linear(self.hidden[i], 2 * self.latent_dims[i]) for i in range(L - 1)])
        out_channels = self.likelihood.param_channels(channels)
        self.decoder = nn.Sequential(
            _block([self.latent_dims[0], self.hidden[0], self.hidden[0]], self.norm),
            nn.Linear(self.hidden[0], out_channels * size * size),
            nn.Unflatten(1, (out_channels, size, size)),
        )

    # ------------------------------------------------------------------ the two passes
    def bottom_up_gaussians(self, x: Tensor) -> list[DiagonalGaussian]:
        """The bottom-up Gaussian of each layer from x, bottom first."""
        gaussians, features = [], x
        for block, head in zip(self.bottom_up, self.bottom_up_heads):
            features = block(features)
            gaussians.append(DiagonalGaussian(*head(features).chunk(2, dim=1)))
        return gaussians

    def encode(self, x: Tensor, condition: Tensor | None = None) -> list[DiagonalGaussian]:
        """The bottom-up half of q(z|x): each layer's Gaussian from x alone (the posterior of a
        layer below the top also depends on the layer above: :meth:`walk_top_down`). What the
        importance-sampled NLL computes once per batch and hands back as ``posterior``."""
        return self.bottom_up_gaussians(x)

    def prior_of(self, i: int, z_above: Tensor | None, batch: int) -> DiagonalGaussian:
        """p(z_l | z_l+1); N(0, I) at the top (z_above None)."""
        if z_above is None:
            zeros = torch.zeros(batch, self.latent_dims[i], device=self.device)
            return DiagonalGaussian(zeros, zeros)
        return DiagonalGaussian(*self.prior_heads[i](self.top_down[i](z_above)).chunk(2, dim=1))

    def walk_top_down(
        self,
        batch: int,
        bottom_up: list[DiagonalGaussian] | None = None,
        noise: list[Tensor] | None = None,
        given_top: Tensor | None = None,
        at_mean: bool = False,
    ) -> list[Layer]:
        """One top-down pass, returned bottom first. With ``bottom_up`` each z_l is drawn from
        the posterior, else from the prior; ``noise[l]`` is the standard normal noise of layer l
        (default: fresh); ``given_top`` fixes z_L, and ``at_mean`` takes every other layer at its
        distribution's mean instead of a draw."""
        layers, z_above = [], None
        for i in reversed(range(len(self.latent_dims))):
            prior = self.prior_of(i, z_above, batch)
            posterior = None
            if bottom_up is not None:
                posterior = bottom_up[i] if z_above is None else precision_weighted(bottom_up[i], prior)
            dist = posterior if posterior is not None else prior
            if z_above is None and given_top is not None:
                z = given_top
            elif at_mean:
                z = dist.mu
            else:
                eps = torch.randn_like(dist.mu) if noise is None else noise[i]
                z = dist.mu + dist.std * eps
            layers.append(Layer(prior, posterior, z))
            z_above = z
        return layers[::-1]

    def layer_kl(self, layers: list[Layer]) -> Tensor:
        """(B, latent_dim) KL(q(z_l | z_l+1, x) || p(z_l | z_l+1)) per dimension, bottom layer first, nats."""
        return torch.cat([layer.posterior.kl_to(layer.prior) for layer in layers], dim=1)

    # ------------------------------------------------------------------ the ELBO
    def elbo_terms(self, x: Tensor, condition: Tensor | None = None, target: Tensor | None = None) -> ELBOTerms:
        layers = self.walk_top_down(x.shape[0], self.bottom_up_gaussians(x))
        x_params = self.decoder(layers[0].z)
        kl = self.layer_kl(layers)
        per_layer = kl.split(self.latent_dims, dim=1)
        return ELBOTerms(
            log_px_z=self.likelihood.log_prob(x if target is None else target, x_params),
            kl_per_example_dim=kl,
            x_params=x_params,
            latent_mean=torch.cat([layer.posterior.mu for layer in layers], dim=1),
            z=torch.cat([layer.z for layer in layers], dim=1),
            extras={f"kl_layer/{i + 1}": layer_kl.detach().sum(dim=1).mean() for i, layer_kl in enumerate(per_layer)},
        )

    def log_importance_weights(
        self,
        x: Tensor,
        num_samples: int,
        condition: Tensor | None = None,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
        posterior: list[DiagonalGaussian] | None = None,
        stop_posterior_gradient: bool = False,
    ) -> ImportanceSamples:
        """k top-down posterior paths per example, weighed by
        log p(x | z_1) + sum_l log p(z_l | z_l+1) - sum_l log q(z_l | z_l+1, x), (B, k) nats.
        The noise is drawn one (B, latent_dim) sample at a time (the stream does not depend on k's chunking).
        DReG's stopped posterior gradient is not implemented for the hierarchy (each layer's posterior
        depends on the sampled layer above): asking for it is an error, not a silent IWAE gradient."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if stop_posterior_gradient:
            raise ConfigError(
                "The hierarchical VAE has no DReG estimator (stop_posterior_gradient): its posteriors depend on the "
                "layers sampled above them. Leave dreg out (model.dreg=false) for model=hvae."
            )
        k, batch = num_samples, x.shape[0]
        gaussians = self.bottom_up_gaussians(x) if posterior is None else posterior
        bottom_up = [DiagonalGaussian(repeat_batch(g.mu, k), repeat_batch(g.logvar, k)) for g in gaussians]
        noise = torch.cat(
            [torch.randn(batch, self.latent_dim, generator=generator, dtype=x.dtype, device=x.device) for _ in range(k)]
        )
        layers = self.walk_top_down(k * batch, bottom_up, list(noise.split(self.latent_dims, dim=1)))
        log_p = sum(layer.prior.log_prob(layer.z) for layer in layers)
        log_q = sum(layer.posterior.log_prob(layer.z) for layer in layers)
        log_px_z = self.likelihood.log_prob(repeat_batch(x if target is None else target, k), self.decoder(layers[0].z))
        z = torch.cat([layer.z for layer in layers], dim=1).reshape(k, batch, -1)
        return ImportanceSamples(log_weights=(log_px_z + log_p - log_q).reshape(k, batch).t(), z=z)

    # ------------------------------------------------------------------ sampling and pictures
    def prior_sample(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The standard normal noise of an ancestral pass, all layers (bottom first), on the CPU."""
        return {"z": torch.randn(num_samples, self.latent_dim, generator=generator)}

    @torch.no_grad()
    def generate(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """Ancestral samples: z_L ~ N(0, I), then z_l ~ p(z_l | z_l+1) down to x, from the noise ``z``."""
        noise = list(z.to(self.device).split(self.latent_dims, dim=1))
        layers = self.walk_top_down(len(z), noise=noise)
        return self.likelihood.mean(self.decoder(layers[0].z))

    @property
    def top_layer(self) -> range:
        """The indices of z_L in the concatenated latent (bottom first)."""
        return self.latent_layers()[str(len(self.latent_dims))]

    def latent_layers(self) -> dict[str, range]:
        """``"1"`` (the bottom) ... ``"L"`` -> that layer's dimensions in the concatenated z."""
        ends = list(itertools.accumulate(self.latent_dims))
        return {str(i + 1): range(end - size, end) for i, (end, size) in enumerate(zip(ends, self.latent_dims))}

    @property
    def traversal_dims(self) -> range:
        """Traversals vary the top layer (:meth:`decode_latent` reads only that one)."""
        return self.top_layer

    @torch.no_grad()
    def decode_latent(self, code: Tensor, condition: Tensor | None = None) -> Tensor:
        """Images for the top layer of ``code`` (as :meth:`latent_code` gives it, all layers),
        with every lower layer at its prior mean given the layer above: traversals and
        interpolations of the top layer."""
        code = code.to(self.device)
        layers = self.walk_top_down(len(code), given_top=code[:, self.top_layer.start :], at_mean=True)
        return self.likelihood.mean(self.decoder(layers[0].z))

    @torch.no_grad()
    def latent_code(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """The posterior means of every layer along the mean path (each lower layer given the
        mean of the one above), bottom first."""
        layers = self.walk_top_down(x.shape[0], self.bottom_up_gaussians(x), at_mean=True)
        return torch.cat([layer.posterior.mu for layer in layers], dim=1)
