"""The probabilistic core against torch.distributions, and the units (nats per example)."""

import math

import pytest
import torch
from torch import distributions as D

from vae_zoo.blocks.likelihoods import Bernoulli, DiagonalGaussian, Gaussian


def test_kl_per_dim_equals_torch_kl_divergence():
    torch.manual_seed(0)
    mu, logvar = torch.randn(16, 7) * 2, torch.randn(16, 7)
    ours = DiagonalGaussian(mu, logvar).kl_to_standard_normal()
    reference = D.kl_divergence(
        D.Normal(mu, torch.exp(0.5 * logvar)), D.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    )
    assert ours.shape == (16, 7)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_posterior_log_prob_and_sample_match_torch():
    torch.manual_seed(1)
    mu, logvar = torch.randn(8, 5), torch.randn(8, 5)
    q = DiagonalGaussian(mu, logvar)
    z = q.rsample()
    reference = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z)
    torch.testing.assert_close(q.log_prob(z), reference, rtol=1e-5, atol=1e-5)
    many = DiagonalGaussian(mu[:1].expand(20000, 5), logvar[:1].expand(20000, 5)).rsample()
    torch.testing.assert_close(many.mean(0), mu[0], atol=0.05, rtol=0)
    torch.testing.assert_close(many.std(0), torch.exp(0.5 * logvar[0]), atol=0.05, rtol=0.05)


def test_extreme_logvar_stays_finite():
    q = DiagonalGaussian(torch.zeros(2, 3), torch.tensor([[1e4, -1e4, 0.0]] * 2))
    assert torch.isfinite(q.kl_to_standard_normal()).all()
    assert torch.isfinite(q.rsample()).all()


def test_bernoulli_log_prob_equals_torch_summed_over_pixels():
    torch.manual_seed(2)
    logits = torch.randn(4, 1, 28, 28) * 5
    x = torch.bernoulli(torch.full_like(logits, 0.3))
    reference = D.Bernoulli(logits=logits).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(Bernoulli().log_prob(x, logits), reference, rtol=1e-5, atol=1e-4)


def test_bernoulli_is_stable_for_huge_logits():
    logits = torch.tensor([[[[1000.0, -1000.0]]]])
    x = torch.tensor([[[[0.0, 1.0]]]])
    value = Bernoulli().log_prob(x, logits)
    assert torch.isfinite(value).all() and value.item() == pytest.approx(-2000.0)


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_gaussian_log_prob_equals_torch_summed_over_pixels(learn_sigma):
    torch.manual_seed(3)
    mean = torch.rand(4, 3, 8, 8)
    x = torch.rand(4, 3, 8, 8)
    likelihood = Gaussian(sigma=0.2, learn_sigma=learn_sigma, channels=3)
    reference = D.Normal(mean, 0.2).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(likelihood.log_prob(x, mean), reference, rtol=1e-5, atol=1e-4)
    assert (len(list(likelihood.parameters())) == 1) == learn_sigma


def test_log_prob_is_per_example_not_per_pixel():
    """Doubling the number of pixels (same values) doubles log p(x|z): a sum, not a mean."""
    torch.manual_seed(4)
    logits, x = torch.randn(3, 1, 6, 6), torch.rand(3, 1, 6, 6).round()
    single = Bernoulli().log_prob(x, logits)
    double = Bernoulli().log_prob(torch.cat([x, x], dim=-1), torch.cat([logits, logits], dim=-1))
    torch.testing.assert_close(double, 2 * single)
    assert single.shape == (3,)
    # and the magnitude is that of a sum over 36 pixels: mean per-pixel NLL * 36
    per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    torch.testing.assert_close(-single, per_pixel.mean(dim=(1, 2, 3)) * 36)
    assert math.isclose(
        Gaussian(sigma=1.0).log_prob(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item(),
        -4 * 0.5 * math.log(2 * math.pi),
        rel_tol=1e-6,
    )
