"""Convolutional encoder/decoder for any image size.

The encoder is a stack of stride-2 4x4 convolutions (one per entry of ``hidden_channels``)
followed by two linear layers, as in the Burgess et al. (2018) architecture used for dSprites
and CelebA. Instead of assuming 64x64 inputs, the feature-map sizes are computed from
``image_size`` (28 -> 14 -> 7 -> 3 -> 1 works as well as 64 -> 32 -> 16 -> 8 -> 4), and the
decoder mirrors them exactly with transposed convolutions whose ``output_padding`` restores odd
sizes, so every image size that survives the downsampling is reconstructed at full size.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vae_zoo.errors import ConfigError

KERNEL, STRIDE, PADDING = 4, 2, 1


def conv_feature_sizes(image_size: int, num_layers: int) -> list[int]:
    """Spatial sizes [S, s1, ..., s_n] through ``num_layers`` stride-2 convolutions.

    With kernel 4, stride 2, padding 1 each layer maps s to floor(s / 2), so the feature map
    survives ``num_layers`` layers exactly when S >= 2**num_layers. Raises ConfigError with the
    fix otherwise.
    """
    if image_size < 2**num_layers:
        raise ConfigError(
            f"A conv net with {num_layers} stride-2 layers cannot take {image_size}x{image_size} "
            f"images: the feature map shrinks to nothing. Use data.image_size >= {2**num_layers}, "
            f"or fewer layers (shorten model.encoder.hidden_channels and "
            f"model.decoder.hidden_channels)."
        )
    sizes = [image_size]
    for _ in range(num_layers):
        sizes.append((sizes[-1] + 2 * PADDING - KERNEL) // STRIDE + 1)
    return sizes


class ConvEncoder(nn.Module):
    """(B, C, S, S) -> (B, out_features).

    Args:
        in_channels, image_size: input image shape (square images).
        out_features: output size (the model asks for 2 * latent_dim: mean and log-variance).
        hidden_channels: channels of each stride-2 conv layer; their number sets the depth.
        fc_features: width of the hidden linear layer.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        out_features: int,
        hidden_channels: Sequence[int] = (32, 32, 64, 64),
        fc_features: int = 256,
    ):
        super().__init__()
        sizes = conv_feature_sizes(image_size, len(hidden_channels))
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *hidden_channels[:-1]], hidden_channels):
            layers += [nn.Conv2d(c_in, c_out, KERNEL, STRIDE, PADDING), nn.SiLU()]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(hidden_channels[-1] * sizes[-1] ** 2, fc_features),
            nn.SiLU(),
            nn.Linear(fc_features, out_features),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.convs(x))


class ConvDecoder(nn.Module):
    """(B, in_features) -> (B, out_channels, S, S), the mirror image of :class:`ConvEncoder`.

    ``hidden_channels`` is given in the encoder's order (the decoder walks it backwards), so
    one list describes both nets.
    """

    def __init__(
        self,
        in_features: int,
        out_channels: int,
        image_size: int,
        hidden_channels: Sequence[int] = (32, 32, 64, 64),
        fc_features: int = 256,
    ):
        super().__init__()
        sizes = conv_feature_sizes(image_size, len(hidden_channels))
        self.fc = nn.Sequential(
            nn.Linear(in_features, fc_features),
            nn.SiLU(),
            nn.Linear(fc_features, hidden_channels[-1] * sizes[-1] ** 2),
            nn.SiLU(),
            nn.Unflatten(1, (hidden_channels[-1], sizes[-1], sizes[-1])),
        )
        channels_out = [*reversed(hidden_channels[:-1]), out_channels]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(reversed(hidden_channels), channels_out)):
            size_in, size_out = sizes[-1 - i], sizes[-2 - i]
            # ConvTranspose2d(k=4, s=2, p=1) doubles the size; output_padding adds the 1 pixel
            # that an odd input size lost in the encoder.
            layers.append(
                nn.ConvTranspose2d(c_in, c_out, KERNEL, STRIDE, PADDING, output_padding=size_out - 2 * size_in)
            )
            if i < len(hidden_channels) - 1:
                layers.append(nn.SiLU())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconvs(self.fc(z))


class ResidualBlock(nn.Module):
    """x + conv1x1(SiLU(conv3x3(SiLU(x)))), the block of van den Oord et al. (2017)."""

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or channels
        self.body = nn.Sequential(
            nn.SiLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.SiLU(), nn.Conv2d(hidden, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ConvGridEncoder(nn.Module):
    """(B, C, S, S) -> (B, out_channels, s, s): a grid of vectors (for VQ-VAE).

    Stride-2 convs as in :class:`ConvEncoder`, then ``num_residual_blocks`` residual blocks and
    a 1x1 conv to ``out_channels``; s = S / 2^len(hidden_channels) (rounded down per layer).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        out_channels: int,
        hidden_channels: Sequence[int] = (64, 128),
        num_residual_blocks: int = 2,
    ):
        super().__init__()
        self.grid_size = conv_feature_sizes(image_size, len(hidden_channels))[-1]
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *hidden_channels[:-1]], hidden_channels):
            layers += [nn.Conv2d(c_in, c_out, KERNEL, STRIDE, PADDING), nn.SiLU()]
        layers += [ResidualBlock(hidden_channels[-1]) for _ in range(num_residual_blocks)]
        layers += [nn.SiLU(), nn.Conv2d(hidden_channels[-1], out_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvGridDecoder(nn.Module):
    """(B, in_channels, s, s) -> (B, out_channels, S, S), the mirror of :class:`ConvGridEncoder`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        hidden_channels: Sequence[int] = (64, 128),
        num_residual_blocks: int = 2,
    ):
        super().__init__()
        sizes = conv_feature_sizes(image_size, len(hidden_channels))
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden_channels[-1], 3, padding=1)]
        layers += [ResidualBlock(hidden_channels[-1]) for _ in range(num_residual_blocks)]
        layers.append(nn.SiLU())
        channels_out = [*reversed(hidden_channels[:-1]), out_channels]
        for i, (c_in, c_out) in enumerate(zip(reversed(hidden_channels), channels_out)):
            size_in, size_out = sizes[-1 - i], sizes[-2 - i]
            layers.append(
                nn.ConvTranspose2d(c_in, c_out, KERNEL, STRIDE, PADDING, output_padding=size_out - 2 * size_in)
            )
            if i < len(hidden_channels) - 1:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
