"""Autoregressive priors over a VQ-VAE's grid of code indices (the second stage of
:class:`~vae_zoo.models.LearnedPriorVQVAE`).

:class:`CodeTransformer` is a small causal (decoder-only) transformer over the h·w codes in
raster order: p(c) = prod_i p(c_i | c_<i, y). Chosen over the gated PixelCNN of van den Oord
et al. (2016), which the VQ-VAE paper used, because on the small grids a VQ-VAE gives (7x7 for
MNIST, 8x8 for CIFAR-10) one attention layer already sees every earlier code, where a PixelCNN
needs a stack deep enough for its receptive field to cover the grid and two stacks to avoid its
blind spot; causality is one mask that torch's fused attention takes (``is_causal``), so it is
easy to get right and to test; and a class condition is simply the start token. On large grids
(32x32 and up) a PixelCNN's convolutions are cheaper than attention over 1024+ positions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vae_zoo.errors import ConfigError


class CodeTransformer(nn.Module):
    """Logits of p(c_i | c_<i, y) for every position i of a (B, h, w) grid of code indices.

    The input at position i is the embedding of code i-1 (at position 0 a learned start token,
    one per class when conditional) plus a learned position embedding, so the logits at i see
    only codes before i.

    Args:
        num_codes: K, the codebook size (the model fills it in).
        grid_size: h = w of the code grid (the model fills it in).
        num_classes: classes of the condition y (0: unconditional).
        width: embedding size.
        depth: transformer layers.
        heads: attention heads per layer.
        dropout: dropout in attention and feed-forward layers (training only).
    """

    def __init__(
        self,
        num_codes: int,
        grid_size: int,
        num_classes: int = 0,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        if width % heads:
            raise ConfigError(f"model.prior.width={width} must be a multiple of model.prior.heads={heads}.")
        self.num_codes, self.grid_size, self.num_classes = num_codes, grid_size, num_classes
        self.num_positions = grid_size * grid_size
        self.code_embedding = nn.Embedding(num_codes, width)
        self.start = nn.Embedding(max(num_classes, 1), width)
        self.position = nn.Parameter(torch.randn(1, self.num_positions, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_codes)
        mask = nn.Transformer.generate_square_subsequent_mask(self.num_positions)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, h, w) code indices (and (B,) labels when conditional) -> (B, h·w, K) logits."""
        return self._next_code_logits(codes.flatten(1)[:, :-1], labels)

    def _next_code_logits(self, prefix: Tensor, labels: Tensor | None) -> Tensor:
        """(B, m) first codes -> (B, m + 1, K): the logits of codes 0..m given those before each."""
        batch, length = prefix.shape[0], prefix.shape[1] + 1
        if self.num_classes and labels is None:
            raise ConfigError("This prior is conditional (model.conditional=true): it needs the labels.")
        start_index = labels.long() if self.num_classes else torch.zeros(batch, dtype=torch.long, device=prefix.device)
        tokens = torch.cat([self.start(start_index)[:, None], self.code_embedding(prefix)], dim=1)
        tokens = tokens + self.position[:, :length]
        hidden = self.blocks(tokens, mask=self.causal_mask[:length, :length], is_causal=True)
        return self.head(self.norm(hidden))

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Ancestral sampling, one position at a time: (num_samples, h, w) code indices.

        Each code is drawn on the CPU with ``generator`` (so a seed gives the same codes on any
        device); the logits are computed where the prior is."""
        device = self.position.device
        codes = torch.zeros(num_samples, 0, dtype=torch.long, device=device)
        labels = None if labels is None else labels.to(device)
        for _ in range(self.num_positions):
            logits = self._next_code_logits(codes, labels)[:, -1].float() / temperature
            probs = torch.softmax(logits, dim=-1).cpu()
            drawn = torch.multinomial(probs, 1, generator=generator).to(device)
            codes = torch.cat([codes, drawn], dim=1)
        return codes.view(num_samples, self.grid_size, self.grid_size)
