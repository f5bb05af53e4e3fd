"""FID with torchmetrics and a configured feature extractor, against scipy."""

import numpy as np
import pytest
import scipy.linalg
import torch

from vae_zoo.data.sprites import make_sprites
from vae_zoo.metrics import (
    ClassifierFeatureExtractor,
    FeatureExtractorUnavailableError,
    frechet_distance,
    inception_v3_features,
)


@pytest.fixture(scope="module")
def sprites():
    """Two independent sets of 16x16 sprites, float in [0, 1]."""
    first, _ = make_sprites(300, seed=0, image_size=16)
    second, _ = make_sprites(300, seed=1, image_size=16)
    return first.float() / 255, second.float() / 255


@pytest.fixture(scope="module")
def extractor():
    return ClassifierFeatureExtractor(in_channels=1, num_features=16, hidden_channels=(8, 16), seed=0)


def scipy_frechet_distance(features_a, features_b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b)), in float64 numpy."""
    a, b = features_a.double().numpy(), features_b.double().numpy()
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * cross))


def test_matches_a_direct_scipy_computation(sprites, extractor):
    real, other = sprites
    fake = (other + 0.1 * torch.rand(other.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    result = frechet_distance(real, fake, extractor, batch_size=64)
    with torch.no_grad():
        expected = scipy_frechet_distance(extractor(real), extractor(fake))
    assert expected > 1e-3
    assert result.value == pytest.approx(expected, rel=1e-5)
    assert (result.num_real, result.num_fake, result.num_features) == (300, 300, 16)
    assert result.feature_extractor == extractor.name


def test_zero_for_identical_sets_and_growing_with_a_shift(sprites, extractor):
    real, other = sprites
    identical = frechet_distance(real, real.clone(), extractor)
    same_distribution = frechet_distance(real, other, extractor)
    assert abs(identical.value) < 1e-3 * same_distribution.value
    levels = (0.05, 0.1, 0.2, 0.4)
    brightened = [frechet_distance(real, (real + offset).clamp(0, 1), extractor).value for offset in levels]
    assert same_distribution.value < brightened[0]
    assert np.all(np.diff(brightened) > 0), brightened
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(3))
    noisier = [frechet_distance(real, (real + sigma * noise).clamp(0, 1), extractor).value for sigma in levels]
    assert np.all(np.diff(noisier) > 0), noisier


def test_batches_uint8_and_tensors_give_the_same_distance(sprites, extractor):
    real, other = sprites
    from_tensors = frechet_distance(real, other, extractor, batch_size=300)
    real_batches = (real[i : i + 70] for i in range(0, 300, 70))  # a generator, as when decoding samples
    from_batches = frechet_distance(real_batches, [other[:150], other[150:]], extractor)
    from_uint8 = frechet_distance((real * 255).to(torch.uint8), other, extractor)
    assert from_batches.value == pytest.approx(from_tensors.value, rel=1e-5)
    assert from_uint8.value == pytest.approx(from_tensors.value, rel=1e-5)
    assert (from_batches.num_real, from_batches.num_fake) == (300, 300)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        frechet_distance(real * 2 - 1, other, extractor)


def test_classifier_extractor_round_trips_through_a_checkpoint(tmp_path, sprites, extractor):
    real, other = sprites
    path = tmp_path / "classifier.pt"
    extractor.save_checkpoint(path)
    loaded = ClassifierFeatureExtractor.from_checkpoint(path)
    assert loaded.name == "ClassifierFeatureExtractor(classifier.pt)"
    with torch.no_grad():
        torch.testing.assert_close(loaded(real[:8]), extractor(real[:8]))
    assert frechet_distance(real, other, loaded).value == pytest.approx(frechet_distance(real, other, extractor).value)
    # a different seed is a different feature map (the seed really initialises it)
    with torch.no_grad():
        other_seed = ClassifierFeatureExtractor(num_features=16, hidden_channels=(8, 16), seed=1)
        assert not torch.allclose(other_seed(real[:8]), extractor(real[:8]))
    with pytest.raises(FeatureExtractorUnavailableError, match="No FID feature extractor checkpoint"):
        ClassifierFeatureExtractor.from_checkpoint(tmp_path / "missing.pt")


def test_inception_without_weights_fails_up_front_and_names_the_alternative(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty weights cache
    with pytest.raises(FeatureExtractorUnavailableError, match="ClassifierFeatureExtractor"):
        inception_v3_features(allow_download=False)
    with pytest.raises(FeatureExtractorUnavailableError, match="ClassifierFeatureExtractor"):
        inception_v3_features(weights_path=tmp_path / "missing.pth")
