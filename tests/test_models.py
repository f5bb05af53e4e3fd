"""The shared ELBO base and the vanilla VAE: units, terms and learning."""

import math
from functools import partial

import torch
from torch import distributions as D

from vae_zoo.blocks.likelihoods import Bernoulli, Gaussian
from vae_zoo.models import VAE
from vae_zoo.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder


def make_vae(latent_dim=4, image_size=28, likelihood=None, conv=False, lr=1e-3, cls=VAE, **kwargs):
    if conv:
        enc, dec = partial(ConvEncoder, hidden_channels=(16, 16)), partial(ConvDecoder, hidden_channels=(16, 16))
    else:
        enc, dec = partial(MLPEncoder, hidden=(64,)), partial(MLPDecoder, hidden=(64,))
    return cls(
        encoder=enc,
        decoder=dec,
        likelihood=likelihood or Bernoulli(),
        latent_dim=latent_dim,
        image_channels=1,
        image_size=image_size,
        optimizer=partial(torch.optim.Adam, lr=lr),
        **kwargs,
    )


def test_terms_are_nats_per_example_and_match_torch_distributions():
    torch.manual_seed(0)
    model = make_vae()
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.2))
    torch.manual_seed(1)
    terms = model(x)
    # recompute everything with torch.distributions from the same posterior sample
    torch.manual_seed(1)
    posterior = model.encode(x)
    z = posterior.rsample()
    logits = model.decode(z)
    recon = -D.Bernoulli(logits=logits).log_prob(x).sum(dim=(1, 2, 3)).mean()
    q = D.Normal(posterior.mu, posterior.std)
    kl_per_dim = D.kl_divergence(q, D.Normal(0.0, 1.0)).mean(0)
    torch.testing.assert_close(terms.recon, recon)
    torch.testing.assert_close(terms.kl_per_dim, kl_per_dim)
    assert terms.kl_per_dim.shape == (4,)
    torch.testing.assert_close(terms.elbo, -(recon + kl_per_dim.sum()))
    torch.testing.assert_close(terms.loss, recon + kl_per_dim.sum())
    # a per-pixel mean would be ~784 times smaller: an untrained model's recon is ~ 784 * ln 2
    assert 0.5 * 784 * math.log(2) < terms.recon.item() < 2 * 784 * math.log(2)


def test_elbo_improves_on_a_fixed_batch():
    torch.manual_seed(0)
    model = make_vae(conv=True, lr=3e-3)
    x = torch.zeros(32, 1, 28, 28)
    for i in range(32):  # 32 distinct binary patterns
        x[i, 0, i % 28, :] = 1
        x[i, 0, :, (3 * i) % 28] = 1
    optimizer = model.configure_optimizers()
    with torch.no_grad():
        before = torch.stack([model(x).elbo for _ in range(10)]).mean()
    for _ in range(150):
        optimizer.zero_grad()
        model(x).loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = torch.stack([model(x).elbo for _ in range(10)]).mean()
    # from ~ -545 nats (random logits) to well under half of that
    assert after > before + 300, (before.item(), after.item())


def test_gaussian_likelihood_and_learned_sigma_train():
    torch.manual_seed(0)
    model = make_vae(likelihood=Gaussian(sigma=0.5, learn_sigma=True), lr=3e-3)
    x = torch.rand(16, 1, 28, 28)
    optimizer = model.configure_optimizers()
    start = model.likelihood.log_sigma.item()
    for _ in range(100):
        optimizer.zero_grad()
        model(x).loss.backward()
        optimizer.step()
    # sigma moves towards the residual scale (uniform noise has std ~0.29 < 0.5)
    assert model.likelihood.log_sigma.item() < start - 0.1


def test_sample_and_reconstruct_give_images_in_unit_range():
    model = make_vae(image_size=32, conv=True)
    assert model.sample(5).shape == (5, 1, 32, 32)
    recon = model.reconstruct(torch.rand(3, 1, 32, 32))
    assert recon.shape == (3, 1, 32, 32) and 0 <= recon.min() and recon.max() <= 1


def test_denoising_scores_the_clean_target_not_the_corrupted_input():
    torch.manual_seed(0)
    model = make_vae()
    clean = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    noisy = (clean + 0.3 * torch.randn_like(clean)).clamp(0, 1)
    torch.manual_seed(1)
    terms = model(noisy, target=clean)
    torch.manual_seed(1)
    posterior = model.encode(noisy)  # the encoder sees the corrupted input
    logits = model.decode(posterior.rsample())
    torch.testing.assert_close(terms.recon, -D.Bernoulli(logits=logits).log_prob(clean).sum(dim=(1, 2, 3)).mean())


def test_batch_terms_read_a_denoising_batch_as_every_stage_does():
    """Training, validation, test, evaluation and anomaly scores all go through batch_terms:
    the encoder sees the corrupted image, p(x|z) scores the clean target."""
    torch.manual_seed(0)
    model = make_vae()
    clean = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    batch = {"image": (clean + 0.3 * torch.randn_like(clean)).clamp(0, 1), "target": clean}
    torch.manual_seed(1)
    terms = model.batch_terms(batch)
    torch.manual_seed(1)
    expected = model(batch["image"], target=clean)
    torch.testing.assert_close(terms.recon, expected.recon)
    torch.manual_seed(1)
    assert not torch.allclose(terms.recon, model(batch["image"]).recon)  # not scored against the input
