"""Encoder/decoder shapes follow image_size and channels; impossible sizes fail clearly."""

import pytest
import torch

from vae_zoo.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, conv_feature_sizes


@pytest.mark.parametrize("image_size", [28, 32, 64, 48, 7 * 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_conv_nets_round_trip_any_size(image_size, channels):
    encoder = ConvEncoder(channels, image_size, out_features=6, hidden_channels=(8, 8, 16))
    decoder = ConvDecoder(3, out_channels=channels, image_size=image_size, hidden_channels=(8, 8, 16))
    x = torch.rand(2, channels, image_size, image_size)
    assert encoder(x).shape == (2, 6)
    assert decoder(torch.randn(2, 3)).shape == (2, channels, image_size, image_size)


def test_mlp_nets_shapes():
    assert MLPEncoder(3, 32, 10)(torch.rand(5, 3, 32, 32)).shape == (5, 10)
    assert MLPDecoder(4, 3, 32)(torch.randn(5, 4)).shape == (5, 3, 32, 32)


def test_feature_sizes_mirror_odd_sizes():
    assert conv_feature_sizes(28, 4) == [28, 14, 7, 3, 1]
    assert conv_feature_sizes(64, 4) == [64, 32, 16, 8, 4]


def test_too_small_image_names_the_fix():
    with pytest.raises(ValueError, match=r"cannot take 8x8 images.*image_size >= 16.*hidden_channels"):
        ConvEncoder(1, 8, 4, hidden_channels=(8, 8, 8, 8))
