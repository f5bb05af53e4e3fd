"""Encoder and decoder bodies, independent of the VAE variant.

Every encoder is built as ``Encoder(in_channels, image_size, out_features, **architecture)``
and maps (B, C, S, S) images to (B, out_features); every decoder as
``Decoder(in_features, out_channels, image_size, **architecture)`` and maps (B, in_features)
to (B, out_channels, S, S). The model fills in the shape arguments (from the data config and
the latent size); configs set only the architecture, as ``_partial_`` targets. Grid nets (for
VQ-VAE) keep the spatial layout: ``GridEncoder(in_channels, image_size, out_channels)`` and
``GridDecoder(in_channels, out_channels, image_size)``. Priors over a VQ-VAE's codes
(:class:`CodeTransformer`) are built as ``Prior(num_codes, grid_size, num_classes)``.
"""

from vae_zoo.nets.code_prior import CodeTransformer
from vae_zoo.nets.conv import (
    ConvDecoder,
    ConvEncoder,
    ConvGridDecoder,
    ConvGridEncoder,
    ResidualBlock,
    conv_feature_sizes,
)
from vae_zoo.nets.fit import nets_must_fit
from vae_zoo.nets.mlp import MLPDecoder, MLPEncoder

__all__ = [
    "nets_must_fit",
    "ConvEncoder",
    "ConvDecoder",
    "ConvGridEncoder",
    "ConvGridDecoder",
    "ResidualBlock",
    "MLPEncoder",
    "MLPDecoder",
    "conv_feature_sizes",
    "CodeTransformer",
]
