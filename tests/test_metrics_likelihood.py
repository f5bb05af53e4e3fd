"""Importance-sampled log-likelihood against the exact log p(x) of a linear-Gaussian VAE.

With a linear decoder x = W z + b + sigma * eps and z ~ N(0, I), the marginal is
p(x) = N(b, W W^T + sigma^2 I) (probabilistic PCA, Tipping & Bishop 1999): the one VAE whose
log p(x), exact posterior and ELBO are all known in closed form.
"""

import math
from functools import partial

import pytest
import torch
from torch.distributions import MultivariateNormal

from vae_zoo.blocks.likelihoods import Gaussian
from vae_zoo.metrics import bits_per_dim, importance_sampled_log_likelihood, importance_sampled_log_likelihoods
from vae_zoo.models import VAE, Capabilities, ConditionalVAE
from vae_zoo.nets import MLPDecoder, MLPEncoder

SIGMA = 0.5
LATENT = 2
D = 4  # 1 x 2 x 2 "images"


def linear_gaussian_vae(seed: int = 0, cls=VAE, **kwargs):
    """A VAE whose encoder and decoder are single Linear layers, in float64."""
    torch.manual_seed(seed)
    model = cls(
        encoder=partial(MLPEncoder, hidden=()),
        decoder=partial(MLPDecoder, hidden=()),
        likelihood=Gaussian(sigma=SIGMA),
        latent_dim=LATENT,
        image_channels=1,
        image_size=2,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        **kwargs,
    ).double()
    return model


def decoder_weight_bias(model):
    linear = model.decoder.net[0]
    return linear.weight.detach(), linear.bias.detach()  # (D, latent (+ condition)), (D,)


def exact_log_px(model, x):
    """(N,) log N(x; b, W W^T + sigma^2 I), nats."""
    weight, bias = decoder_weight_bias(model)
    covariance = weight @ weight.T + SIGMA**2 * torch.eye(D, dtype=weight.dtype)
    return MultivariateNormal(bias, covariance).log_prob(x.flatten(1))


def set_imperfect_encoder(model):
    """q(z|x): the exact posterior mean map, perturbed, with a too-wide diagonal variance
    (the exact posterior is correlated), so the ELBO gap is clearly positive."""
    weight, bias = decoder_weight_bias(model)
    posterior_cov = torch.linalg.inv(torch.eye(LATENT, dtype=weight.dtype) + weight.T @ weight / SIGMA**2)
    mean_map = posterior_cov @ weight.T / SIGMA**2  # mu(x) = mean_map (x - b)
    generator = torch.Generator().manual_seed(1)
    encoder = model.encoder.net[1][0]
    with torch.no_grad():
        encoder.weight[:LATENT] = mean_map + 0.1 * torch.randn(mean_map.shape, generator=generator, dtype=weight.dtype)
        encoder.bias[:LATENT] = -mean_map @ bias + 0.2
        encoder.weight[LATENT:] = 0.0
        encoder.bias[LATENT:] = torch.log(2.0 * posterior_cov.diagonal())


def analytic_elbo(model, x):
    """(N,) E_q[log p(x|z)] - KL(q || N(0, I)) in closed form for the linear-Gaussian model."""
    weight, bias = decoder_weight_bias(model)
    posterior = model.encode(x)
    mean, var = posterior.mu.detach(), posterior.std.detach() ** 2
    residual = x.flatten(1) - bias - mean @ weight.T
    expected_sq_error = residual.pow(2).sum(1) + (var * weight.pow(2).sum(0)).sum(1)
    expected_log_lik = -0.5 * D * math.log(2 * math.pi * SIGMA**2) - expected_sq_error / (2 * SIGMA**2)
    kl = 0.5 * (mean.pow(2) + var - 1 - var.log()).sum(1)
    return expected_log_lik - kl


def sample_data(model, n, seed):
    weight, bias = decoder_weight_bias(model)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, LATENT, generator=generator, dtype=weight.dtype)
    noise = torch.randn(n, D, generator=generator, dtype=weight.dtype)
    return (z @ weight.T + bias + SIGMA * noise).reshape(n, 1, 2, 2)


@pytest.fixture(scope="module")
def model():
    model = linear_gaussian_vae()
    set_imperfect_encoder(model)
    return model


def test_estimate_converges_to_exact_log_likelihood(model):
    x = sample_data(model, 200, seed=2)
    exact = exact_log_px(model, x)
    batches = [{"image": x[i : i + 64]} for i in range(0, 200, 64)]  # uneven last batch
    generator = torch.Generator().manual_seed(3)
    k1 = importance_sampled_log_likelihoods(model, batches, num_samples=1, generator=generator)
    k1000 = importance_sampled_log_likelihoods(model, batches, num_samples=1000, generator=generator)
    error_k1, error_k1000 = (k1 - exact).abs(), (k1000 - exact).abs()
    assert k1000.shape == exact.shape == (200,)
    assert error_k1.mean() > 0.5, error_k1.mean()  # the proposal is clearly imperfect ...
    # ... yet with K = 1000 each example is within Monte Carlo error (~0.03 nats) of log p(x)
    assert error_k1000.mean() < 0.04 and error_k1000.max() < 0.2, (error_k1000.mean(), error_k1000.max())
    assert error_k1000.mean() < error_k1.mean() / 20
    # and centred on it: over 200 examples the noise averages out (a wrong constant, such as a
    # missing log K or prior normaliser, would be off by > 0.9 nats)
    assert abs((k1000 - exact).mean()) < 0.01, (k1000 - exact).mean()


def test_bound_is_the_elbo_at_k1_and_tightens_with_k_in_expectation(model):
    x = sample_data(model, 50, seed=4)
    exact, elbo = exact_log_px(model, x), analytic_elbo(model, x)
    gap = exact - elbo  # KL(q(z|x) || p(z|x)) > 0
    assert gap.min() > 0.3, gap.min()
    repeats = 400
    x_repeated = x.repeat(repeats, 1, 1, 1)  # (repeats * 50, ...): example i at rows i, i + 50, ...
    torch.manual_seed(5)
    means = {
        k: importance_sampled_log_likelihood(model, x_repeated, num_samples=k).reshape(repeats, 50).mean(0)
        for k in (1, 10)
    }
    # E[L_1] is the ELBO: the mean of 20000 single-sample estimates matches the closed form
    estimates_k1 = importance_sampled_log_likelihood(model, x_repeated, num_samples=1).reshape(repeats, 50)
    standard_error = estimates_k1.std() / math.sqrt(estimates_k1.numel())
    assert abs(estimates_k1.mean() - elbo.mean()) < 4 * standard_error, (estimates_k1.mean(), elbo.mean())
    # a lower bound in expectation, tighter with more samples (Burda et al. 2016, Theorem 1)
    assert means[1].mean() < means[10].mean() < exact.mean()
    assert exact.mean() - means[1].mean() > 10 * standard_error


def test_chunking_does_not_change_the_estimate(model):
    x = sample_data(model, 16, seed=6)
    one_chunk = importance_sampled_log_likelihood(
        model, x, num_samples=350, chunk_size=350, generator=torch.Generator().manual_seed(7)
    )
    chunks_of_7 = importance_sampled_log_likelihood(  # 50 chunks, the last one short
        model, x, num_samples=350, chunk_size=7, generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(chunks_of_7, one_chunk, rtol=1e-12, atol=1e-10)
    other_seed = importance_sampled_log_likelihood(
        model, x, num_samples=350, chunk_size=7, generator=torch.Generator().manual_seed(8)
    )
    assert not torch.allclose(other_seed, one_chunk, rtol=0, atol=1e-9)  # the seed matters, the chunks do not


def test_conditional_model_is_scored_with_its_condition():
    num_classes = 3
    model = linear_gaussian_vae(seed=9, cls=ConditionalVAE, num_classes=num_classes)
    with torch.no_grad():  # q(z|x, c) = N(0, I): plain Monte Carlo over the prior
        model.encoder.net[1][0].weight.zero_()
        model.encoder.net[1][0].bias.zero_()
        model.decoder.net[0].weight[:, LATENT:] *= 4  # the class moves the mean a lot
    weight, bias = decoder_weight_bias(model)
    labels = torch.arange(30) % num_classes
    condition = model.encode_labels(labels).double()
    class_means = condition @ weight[:, LATENT:].T + bias
    x = class_means + 0.3 * torch.randn(30, D, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    x = x.reshape(30, 1, 2, 2)
    weight_z = weight[:, :LATENT]
    covariance = weight_z @ weight_z.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    exact = MultivariateNormal(class_means, covariance).log_prob(x.flatten(1))
    estimate = importance_sampled_log_likelihood(
        model, x, condition, num_samples=4000, chunk_size=500, generator=torch.Generator().manual_seed(11)
    )
    assert (estimate - exact).abs().max() < 0.03, (estimate - exact).abs().max()
    wrong = importance_sampled_log_likelihood(model, x, condition.roll(1, dims=0), num_samples=200)
    assert (wrong - exact).mean() < -1.0  # the label changes the likelihood: it is really used


def test_model_without_gaussian_posterior_is_refused():
    model = linear_gaussian_vae()
    model.capabilities = Capabilities(gaussian_posterior=False, importance_weights=False)  # as VQ-VAE declares
    with pytest.raises(ValueError, match="posterior with a density"):
        importance_sampled_log_likelihood(model, torch.zeros(2, 1, 2, 2, dtype=torch.float64))


def test_bits_per_dim_is_nats_over_d_ln2(model):
    nll = -importance_sampled_log_likelihood(model, sample_data(model, 8, seed=12), num_samples=50)
    bits = bits_per_dim(nll, model.data_dim)
    assert model.data_dim == D
    torch.testing.assert_close(bits * D * math.log(2), nll)
    assert bits_per_dim(3 * 784 * math.log(2), 784) == pytest.approx(3.0)


def estimator_before_the_refactor(model, x, condition=None, num_samples=1000, chunk_size=100, generator=None):
    """The IS-NLL estimator as it was before the models gave their own log weights (vae_zoo
    a70a42c, vae_zoo/metrics/likelihood.py), kept verbatim as the reference."""
    log_2pi = math.log(2.0 * math.pi)
    posterior = model.encode(x, condition)
    mu, logvar = posterior.mu.contiguous(), posterior.logvar.contiguous()
    std = torch.exp(0.5 * logvar)
    batch = x.shape[0]
    log_sum_weights = torch.full((batch,), -math.inf, dtype=x.dtype, device=x.device)
    for start in range(0, num_samples, chunk_size):
        chunk = min(chunk_size, num_samples - start)
        noise = torch.stack(
            [torch.randn(mu.shape, generator=generator, dtype=x.dtype, device=x.device) for _ in range(chunk)]
        )
        z = mu + std * noise
        log_q = -0.5 * (noise.pow(2) + logvar + log_2pi).sum(dim=-1)
        log_prior = -0.5 * (z.pow(2) + log_2pi).sum(dim=-1)
        flat_condition = (
            None
            if condition is None
            else condition.unsqueeze(0).expand(chunk, *condition.shape).reshape(chunk * batch, -1)
        )
        x_params = model.decode(z.reshape(chunk * batch, -1), flat_condition)
        repeated = x.unsqueeze(0).expand(chunk, *x.shape).reshape(chunk * batch, *x.shape[1:])
        log_px_z = model.likelihood.log_prob(repeated, x_params).reshape(chunk, batch)
        log_sum_weights = torch.logaddexp(log_sum_weights, torch.logsumexp(log_px_z + log_prior - log_q, dim=0))
    return log_sum_weights - math.log(num_samples)


@pytest.mark.parametrize("cls", [VAE, ConditionalVAE])
def test_the_estimator_gives_the_same_numbers_as_before_the_refactor(cls):
    """The estimator now takes its log weights from model.log_importance_weights; on a fixed
    model and seed it must give what the old, self-contained estimator gave (float64;
    tolerance 1e-12 relative, i.e. the same arithmetic)."""
    extra = {"num_classes": 3} if cls is ConditionalVAE else {}
    model = linear_gaussian_vae(seed=3, cls=cls, **extra).eval()
    if cls is VAE:
        set_imperfect_encoder(model)
    x = sample_data(model, 16, seed=5) if cls is VAE else torch.randn(16, 1, 2, 2, dtype=torch.float64)
    condition = None if cls is VAE else torch.nn.functional.one_hot(torch.arange(16) % 3, 3).double()
    with torch.no_grad():
        before = estimator_before_the_refactor(model, x, condition, 300, 70, torch.Generator().manual_seed(2))
    now = importance_sampled_log_likelihood(model, x, condition, 300, 70, torch.Generator().manual_seed(2))
    torch.testing.assert_close(now, before, rtol=1e-12, atol=1e-12)


def test_progress_counts_every_decode_and_leaves_the_estimate_alone(model):
    x = sample_data(model, 30, seed=9)
    batches = [{"image": x[i : i + 8]} for i in range(0, 30, 8)]
    calls = []
    with_progress = importance_sampled_log_likelihoods(
        model, batches, 70, 20, torch.Generator().manual_seed(1), progress=calls.append
    )
    without = importance_sampled_log_likelihoods(model, batches, 70, 20, torch.Generator().manual_seed(1))
    torch.testing.assert_close(with_progress, without, rtol=0, atol=0)
    assert sum(calls) == 30 * 70 and len(calls) == 4 * 4  # every chunk of every batch, the short ones too


def tiny_conv_vae_and_images():
    """A small conv VAE (float32, seeded) for 28x28 one-channel images, and 64 binary images."""
    from vae_zoo.blocks.likelihoods import Bernoulli
    from vae_zoo.nets import ConvDecoder, ConvEncoder

    torch.manual_seed(0)
    conv = VAE(
        encoder=partial(ConvEncoder, hidden_channels=(8, 16, 16)),
        decoder=partial(ConvDecoder, hidden_channels=(8, 16, 16)),
        likelihood=Bernoulli(),
        latent_dim=4,
        image_size=28,
        image_channels=1,
        optimizer=partial(torch.optim.SGD, lr=0.1),
    )
    x = (torch.rand(64, 1, 28, 28) > 0.7).float()
    return conv, x


def test_the_conv_nets_estimate_is_the_same_in_the_channels_last_layout():
    # evaluate puts a run's model in the layout it was trained in (channels_last: true): the
    # same draws must give the same estimate, up to float rounding
    from vae_zoo.nets.memory_format import use_channels_last

    conv, x = tiny_conv_vae_and_images()
    draws = dict(num_samples=200, chunk_size=1)
    before = importance_sampled_log_likelihood(conv, x, **draws, generator=torch.Generator().manual_seed(3))
    use_channels_last(conv)
    assert conv.decoder.deconvs[0].weight.is_contiguous(memory_format=torch.channels_last)
    after = importance_sampled_log_likelihood(conv, x, **draws, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)  # nats; the estimates are ~-500


def test_the_evaluation_progress_logs_each_tenth_with_the_time_left(caplog):
    import logging

    from vae_zoo.metrics.progress import EvaluationProgress

    with caplog.at_level(logging.INFO, logger="vae_zoo.metrics.progress"):
        with EvaluationProgress("NLL", total=1000, unit="decodes", terminal=False) as progress:
            for _ in range(40):
                progress.advance(25)
    lines = [record.getMessage() for record in caplog.records]
    assert [line.split(": ")[1].split("%")[0] for line in lines[:-1]] == [str(p) for p in range(10, 101, 10)]
    assert "(500 of 1000 decodes)" in lines[4] and "left" in lines[4] and lines[-1].startswith("NLL: done in")
    with EvaluationProgress("NLL", total=10, terminal=True) as bar:  # rich's bar on a terminal
        bar.advance(10)
    assert bar.done == 10


def test_a_bf16_decoder_gives_the_float32_estimate_to_a_few_hundredths_of_a_nat():
    conv, x = tiny_conv_vae_and_images()
    draws = dict(num_samples=100, chunk_size=10)
    exact = importance_sampled_log_likelihood(conv, x, **draws, generator=torch.Generator().manual_seed(3))
    fast = importance_sampled_log_likelihood(
        conv, x, **draws, generator=torch.Generator().manual_seed(3), precision="bf16"
    )
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)  # the decoder did run in bf16
    assert (fast - exact).abs().mean() < 0.1 and (fast - exact).abs().max() < 0.5  # nats; estimates ~-500
    with pytest.raises(ValueError, match="precision must be one of 32, bf16"):
        importance_sampled_log_likelihood(conv, x, **draws, precision="fp8")
