"""Vector quantisation for VQ-VAE (van den Oord et al. 2017), with the tricks that matter.

Built here rather than taken from vector-quantize-pytorch: what VQ-VAE needs is short (nearest
code, straight-through gradient, codebook/commitment losses or EMA updates, dead-code restart,
k-means initialisation), and owning it lets us make the codebook statistics exact under DDP -
counts and sums are all-reduced before every EMA update, restarts and k-means init are computed
on rank 0 and broadcast - which that library has got wrong before (its issues #25, #105, #222),
and test it with two real processes. It also keeps its einops/einx dependencies out.

Units: the codebook and commitment losses are squared Euclidean distances summed over latent
positions and code dimensions, averaged over the batch (per example, like every other term).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vae_zoo.errors import ConfigError


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(t: Tensor) -> Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _broadcast_from_rank_zero(t: Tensor) -> Tensor:
    if _distributed():
        dist.broadcast(t, src=0)
    return t


@dataclass
class QuantizerOutput:
    """Result of quantising a (B, D, H, W) grid of encoder outputs.

    Attributes:
        z_q: quantised grid with the straight-through gradient to the encoder output.
        indices: (B, H, W) code index at each position.
        codebook_loss: (B,) ||sg[z_e] - e||^2 summed per example (0 with EMA updates).
        commitment_loss: (B,) ||z_e - sg[e]||^2 summed per example (unweighted).
        perplexity: exp(entropy) of the code usage in this batch (in training, of all ranks
            together; in eval, of this rank's batch).
        dead_codes: number of codes whose usage (EMA of counts per batch) is below threshold.
    """

    z_q: Tensor
    indices: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    dead_codes: Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation onto a codebook of ``num_codes`` vectors.

    Args:
        num_codes: K, the codebook size.
        code_dim: D, the size of each code vector.
        ema: update the codebook by exponential moving averages of the assigned encoder
            outputs (van den Oord et al. 2017, appendix) instead of the codebook loss.
        decay: EMA decay (0.99).
        eps: Laplace smoothing of the EMA counts.
        dead_code_threshold: a code whose EMA usage (expected assignments per batch, summed
            over ranks) falls below this is dead.
        restart_dead_codes: replace dead codes by random encoder outputs of the current batch
            (during training only).
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations for that initialisation.
    """

    def __init__(
        self,
        num_codes: int = 512,
        code_dim: int = 64,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float = 1.0,
        restart_dead_codes: bool = True,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
    ):
        super().__init__()
        if num_codes < 2 or code_dim < 1:
            raise ConfigError(f"A codebook needs num_codes >= 2 and code_dim >= 1, got {num_codes}, {code_dim}.")
        if not 0 < decay < 1:
            raise ConfigError(f"quantizer.decay must be in (0, 1), got {decay}.")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.ema, self.decay, self.eps = ema, decay, eps
        self.dead_code_threshold, self.restart_dead_codes = dead_code_threshold, restart_dead_codes
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        codebook = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        # Every code starts "alive" (usage = threshold) so nothing restarts before it had a chance.
        self.register_buffer("usage", torch.full((num_codes,), float(dead_code_threshold)))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self._initialized_known = not kmeans_init  # host copy, so forward never syncs for it

    # ------------------------------------------------------------------ quantisation
    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest code for each row of ``flat`` (N, D)."""
        distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + self.codebook.pow(2).sum(1)
        return distances.argmin(dim=1)

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, H, W) code indices -> (B, D, H, W) code vectors."""
        return self.codebook[indices].permute(0, 3, 1, 2)

    def forward(self, z_e: Tensor) -> QuantizerOutput:
        batch, dim, height, width = z_e.shape
        if dim != self.code_dim:
            raise ConfigError(f"The encoder gives {dim}-dim vectors but the codebook holds {self.code_dim}-dim codes.")
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, dim)
        if self.training and not self._initialized_known:
            self._initialized_known = bool(self.initialized)  # once; True after a resume
            if not self._initialized_known:
                self._kmeans_initialise(flat.detach())
                self._initialized_known = True
        indices = self.nearest(flat.detach())
        counts = torch.bincount(indices, minlength=self.num_codes).float()
        if self.training:
            # Collectives only in training steps, which every rank runs in lockstep; in eval
            # (uneven validation shards, rank-zero image callbacks) a collective would hang.
            _all_reduce_sum(counts)
            self._update_usage(counts)
            if self.ema:
                self._ema_update(flat.detach(), indices, counts)
        z_q = self.codebook[indices].view(batch, height, width, dim).permute(0, 3, 1, 2)
        per_example = lambda t: t.pow(2).flatten(1).sum(1)  # noqa: E731
        codebook_loss = torch.zeros(batch, device=z_e.device) if self.ema else per_example(z_e.detach() - z_q)
        commitment_loss = per_example(z_e - z_q.detach())
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        dead_codes = (self.usage < self.dead_code_threshold).sum()
        if self.training and self.restart_dead_codes:
            self._restart_dead_codes(flat.detach())
        return QuantizerOutput(
            z_q=z_e + (z_q - z_e).detach(),  # straight-through estimator
            indices=indices.view(batch, height, width),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            dead_codes=dead_codes,
        )

    # ------------------------------------------------------------------ codebook statistics
    @torch.no_grad()
    def _update_usage(self, counts: Tensor) -> None:
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        """EMA of counts and of the sums of assigned vectors, over all ranks, then
        e_k = sum_k / count_k with Laplace smoothing of the counts."""
        sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, flat)
        _all_reduce_sum(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor) -> None:
        """Move dead codes onto random encoder outputs of this batch (chosen on rank 0 and
        broadcast, so every rank keeps the same codebook). Written with ``torch.where`` so no
        step waits on the host to learn whether any code is dead. ``usage`` is computed from
        all-reduced counts, so the dead set is the same on every rank."""
        dead = (self.usage < self.dead_code_threshold).unsqueeze(1)
        replacements = flat[torch.randint(0, flat.shape[0], (self.num_codes,), device=flat.device)]
        _broadcast_from_rank_zero(replacements)
        self.codebook.data.copy_(torch.where(dead, replacements, self.codebook.data))
        self.usage.copy_(torch.where(dead[:, 0], torch.full_like(self.usage, self.dead_code_threshold), self.usage))
        if self.ema:
            self.ema_count.copy_(torch.where(dead[:, 0], torch.ones_like(self.ema_count), self.ema_count))
            self.ema_sum.copy_(torch.where(dead, replacements, self.ema_sum))

    @torch.no_grad()
    def _kmeans_initialise(self, flat: Tensor) -> None:
        """Lloyd's k-means on this batch's encoder outputs (rank 0), broadcast to all ranks."""
        generator = torch.Generator(device="cpu").manual_seed(0)
        start = torch.randint(0, flat.shape[0], (self.num_codes,), generator=generator).to(flat.device)
        centroids = flat[start].clone()
        for _ in range(self.kmeans_iters):
            assign = torch.cdist(flat, centroids).argmin(dim=1)
            counts = torch.bincount(assign, minlength=self.num_codes).float()
            sums = torch.zeros_like(centroids).index_add_(0, assign, flat)
            filled = counts > 0
            centroids[filled] = sums[filled] / counts[filled, None]
        _broadcast_from_rank_zero(centroids)
        self.codebook.data.copy_(centroids)
        if self.ema:
            self.ema_sum.copy_(centroids)
            self.ema_count.fill_(1.0)
        self.initialized.fill_(True)
