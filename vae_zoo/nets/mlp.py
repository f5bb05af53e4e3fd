"""Fully connected encoder/decoder on flattened images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vae_zoo.errors import ConfigError

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU}


def _mlp(sizes: Sequence[int], activation: str = "silu") -> nn.Sequential:
    """Linear layers with ``activation`` between them (none after the last)."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"Unknown activation {activation!r}: choose one of {sorted(ACTIVATIONS)}.")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """(B, C, S, S) -> (B, out_features) through hidden layers ``hidden``."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        out_features: int,
        hidden: Sequence[int] = (512, 256),
        activation: str = "silu",
    ):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), _mlp([in_channels * image_size * image_size, *hidden, out_features], activation)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """(B, in_features) -> (B, out_channels, S, S) through hidden layers ``hidden``."""

    def __init__(
        self,
        in_features: int,
        out_channels: int,
        image_size: int,
        hidden: Sequence[int] = (256, 512),
        activation: str = "silu",
    ):
        super().__init__()
        self.net = _mlp([in_features, *hidden, out_channels * image_size * image_size], activation)
        self.unflatten = nn.Unflatten(1, (out_channels, image_size, image_size))

    def forward(self, z: Tensor) -> Tensor:
        return self.unflatten(self.net(z))
