"""MIG, FactorVAE score and DCI on codes whose disentanglement is known by construction."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.ensemble import GradientBoostingClassifier

from vae_zoo.metrics import dci, factor_vae_score, latent_codes_and_factors, mutual_information_gap
from vae_zoo.metrics.dci import disentanglement_and_completeness

FACTOR_SIZES = (3, 4, 5)
FAST_GBT = GradientBoostingClassifier(n_estimators=15, max_depth=2)  # a cheap DCI classifier for tests


def random_factors(n, seed=0, sizes=FACTOR_SIZES):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(size, size=n) for size in sizes], axis=1)


def copy_code(factors, seed=1, noise=0.01):
    """One code dimension per factor, equal to it up to tiny noise: perfectly disentangled."""
    rng = np.random.default_rng(seed)
    return factors + noise * rng.standard_normal(factors.shape)


def noise_code(n, dims=3, seed=2):
    return np.random.default_rng(seed).standard_normal((n, dims))


# -------------------------------------------------------------------------------- MIG
def test_mig_equals_its_closed_form_on_a_balanced_grid():
    # every combination of v0 in 0..3 and v1 in 0..2, 50 times: the factors are exactly
    # independent, so the plug-in mutual informations are exact
    grid = np.array([(a, b) for a in range(4) for b in range(3)] * 50)
    v0, v1 = grid[:, 0], grid[:, 1]
    codes = np.stack([v0, v1, v0 // 2], axis=1) * 0.37 + 5.0  # an affine map changes nothing
    result = mutual_information_gap(torch.from_numpy(grid), torch.from_numpy(codes))
    expected_mi = np.array([[math.log(4), 0.0], [0.0, math.log(3)], [math.log(2), 0.0]])
    np.testing.assert_allclose(result.mutual_information, expected_mi, atol=1e-12)
    np.testing.assert_allclose(result.factor_entropy, [math.log(4), math.log(3)])
    # v0: (log 4 - log 2) / log 4 = 1/2 (a coarse copy competes); v1: log 3 / log 3 = 1
    np.testing.assert_allclose(result.gap_per_factor, [0.5, 1.0], atol=1e-12)
    assert result.mig == pytest.approx(0.75)
    assert result.num_examples == 600


def test_mig_is_near_one_for_a_copy_and_near_zero_for_noise():
    factors = random_factors(4000)
    assert mutual_information_gap(factors, copy_code(factors)).mig > 0.95
    assert mutual_information_gap(factors, noise_code(4000)).mig < 0.02


# ------------------------------------------------------------------ FactorVAE score
def test_factor_vae_score_is_one_for_a_copy_and_chance_for_noise():
    factors = random_factors(3000)
    copy = factor_vae_score(factors, copy_code(factors), num_train=1000, num_eval=500)
    assert copy.eval_accuracy == 1.0 and copy.train_accuracy == 1.0
    np.testing.assert_array_equal(np.argmax(copy.votes, axis=0), [0, 1, 2])  # dim j votes for factor j
    noise = factor_vae_score(factors, noise_code(3000), num_train=1000, num_eval=500)
    assert noise.eval_accuracy < 0.45  # chance is 1/3 with three factors


def test_factor_vae_score_prunes_collapsed_dimensions_and_is_seeded():
    factors = random_factors(2000)
    codes = copy_code(factors)
    with_dead_dims = np.concatenate([codes, np.zeros((2000, 1)), 1e-3 * noise_code(2000, dims=1)], axis=1)
    result = factor_vae_score(factors, with_dead_dims, num_train=500, num_eval=300)
    assert result.num_active_dims == 3  # the constant and the 1e-3-std dimensions are collapsed
    assert result.eval_accuracy == 1.0
    assert result.votes[:, 3:].sum() == 0
    # the same seed gives the same votes; another seed other votes
    entangled = codes @ np.random.default_rng(3).standard_normal((3, 3))
    first, again = (factor_vae_score(factors, entangled, num_train=300, num_eval=100, seed=5) for _ in range(2))
    np.testing.assert_array_equal(first.votes, again.votes)
    assert first.eval_accuracy == again.eval_accuracy
    other_seed = factor_vae_score(factors, entangled, num_train=300, num_eval=100, seed=6)
    assert not np.array_equal(first.votes, other_seed.votes)


# -------------------------------------------------------------------------------- DCI
def test_disentanglement_and_completeness_match_scipy_entropies():
    rng = np.random.default_rng(4)
    importance = rng.random((6, 4)) ** 3
    importance[2] = 0.0  # a code no classifier used
    # Eastwood & Williams 2018, eqs. 1-2, written with scipy's entropy
    code_weight = importance.sum(1) / importance.sum()
    used = code_weight > 0
    d_per_code = 1 - scipy.stats.entropy(importance[used].T, base=4)
    c_per_factor = 1 - scipy.stats.entropy(importance, base=6)
    factor_weight = importance.sum(0) / importance.sum()
    disentanglement, completeness = disentanglement_and_completeness(importance)
    assert disentanglement == pytest.approx((d_per_code * code_weight[used]).sum(), abs=1e-12)
    assert completeness == pytest.approx((c_per_factor * factor_weight).sum(), abs=1e-12)
    assert disentanglement_and_completeness(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert disentanglement_and_completeness(np.ones((3, 3))) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_dci_of_copy_noise_and_duplicated_codes():
    factors = random_factors(900)
    copy = dci(factors, copy_code(factors), classifier=FAST_GBT)
    assert copy.disentanglement > 0.95 and copy.completeness > 0.95
    assert copy.informativeness_test > 0.99
    assert copy.importance_matrix.shape == (3, 3)
    noise = dci(factors, noise_code(900), classifier=FAST_GBT)
    assert noise.disentanglement < 0.2 and noise.completeness < 0.2
    assert noise.informativeness_test < 0.45  # about chance: 1/3, 1/4, 1/5
    # two dimensions copying factor 0: each code still serves one factor (disentangled), but
    # factor 0 is spread over two codes (less complete)
    duplicated_codes = np.concatenate([copy_code(factors), copy_code(factors[:, :1], seed=7)], axis=1)
    duplicated = dci(factors, duplicated_codes, classifier=FAST_GBT)
    assert duplicated.disentanglement > 0.95
    assert duplicated.importance_matrix[[0, 3], 0].min() > 0.4  # the copies share factor 0 about equally
    # so C_0 = 1 - H(1/2, 1/2) / log 4 = 1/2 and C = (1/2 + 1 + 1) / 3
    assert duplicated.completeness == pytest.approx(5 / 6, abs=0.01)
    # the order of the code dimensions does not matter
    permuted = dci(factors, copy_code(factors)[:, [2, 0, 1]], classifier=FAST_GBT)
    assert permuted.disentanglement == pytest.approx(copy.disentanglement, abs=0.02)
    assert permuted.completeness == pytest.approx(copy.completeness, abs=0.02)
    np.testing.assert_allclose(permuted.importance_matrix, copy.importance_matrix[[2, 0, 1]], atol=0.02)


def test_dci_default_classifier_is_disentanglement_libs_gradient_boosting():
    factors = random_factors(300, sizes=(2, 3))
    result = dci(factors, copy_code(factors), seed=3)
    assert result.disentanglement > 0.95 and result.completeness > 0.95
    assert result.informativeness_train == 1.0 and result.informativeness_test == 1.0
    np.testing.assert_array_equal(result.importance_matrix, dci(factors, copy_code(factors), seed=3).importance_matrix)


# ------------------------------------------------------------------ codes of a model
def test_latent_codes_and_factors_are_posterior_means_in_batch_order():
    from test_models import make_vae

    torch.manual_seed(0)
    model = make_vae(latent_dim=3, image_size=8)
    images = torch.rand(20, 1, 8, 8)
    factors = torch.from_numpy(random_factors(20))
    batches = [{"image": images[i : i + 8], "factors": factors[i : i + 8]} for i in range(0, 20, 8)]
    codes, collected = latent_codes_and_factors(model, batches)
    torch.testing.assert_close(codes, model.encode(images).mu.detach())
    assert torch.equal(collected, factors)
    with pytest.raises(KeyError, match="ground-truth factors"):
        latent_codes_and_factors(model, [{"image": images}])
