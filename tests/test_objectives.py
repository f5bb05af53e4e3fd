"""The objective family on the opened base: IWAE (and DReG), β-TCVAE, FactorVAE, DIP-VAE."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch

from vae_zoo.blocks.likelihoods import Bernoulli
from vae_zoo.blocks.stats import standard_normal_log_prob
from vae_zoo.errors import ConfigError
from vae_zoo.models import DIPVAE, IWAE, VAE, BetaTCVAE, FactorVAE
from vae_zoo.nets import MLPDecoder, MLPEncoder
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train

from conftest import TINY_SPRITES

TINY_MLP = dict(
    encoder=partial(MLPEncoder, hidden=(64,)),
    decoder=partial(MLPDecoder, hidden=(64,)),
    likelihood=Bernoulli(),
    latent_dim=4,
    image_channels=1,
    image_size=8,
    optimizer=partial(torch.optim.Adam, lr=3e-3),
)


def batch(n: int = 32, seed: int = 0) -> torch.Tensor:
    """Binary 8x8 'images': a bright square at a random place, so there is structure to learn."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 8, 8)
    corners = torch.randint(0, 5, (n, 2), generator=generator)
    for image, (row, column) in zip(x, corners):
        image[0, row : row + 3, column : column + 3] = 1.0
    return x


def fit(model: L.LightningModule, steps: int = 150, seed: int = 0) -> L.LightningModule:
    torch.manual_seed(seed)
    optimizer = model.configure_optimizers()
    data = batch(256, seed=1)
    for step in range(steps):
        x = data[(step * 32) % 256 :][:32]
        loss = model(x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


# ------------------------------------------------------------------------------------ IWAE
def test_the_one_sample_bound_is_the_elbo_of_the_same_draw():
    model = VAE(**TINY_MLP).eval()
    x = batch()
    with torch.no_grad():
        samples = model.log_importance_weights(x, 1, generator=torch.Generator().manual_seed(3))
        posterior = model.encode(x)
        noise = torch.randn(posterior.mu.shape, generator=torch.Generator().manual_seed(3))
        z = posterior.mu + posterior.std * noise
        elbo_of_draw = (
            model.likelihood.log_prob(x, model.decode(z)) + standard_normal_log_prob(z) - posterior.log_prob(z)
        )
    assert samples.log_weights.shape == (32, 1)
    torch.testing.assert_close(samples.log_weights[:, 0], elbo_of_draw, rtol=1e-5, atol=1e-4)
    # and its mean over draws is the ELBO with the KL in closed form (log p(x|z) sampled in both)
    with torch.no_grad():
        many = model.log_importance_weights(x, 4000, generator=torch.Generator().manual_seed(4)).log_weights
        terms = torch.stack([model.elbo_terms(x).elbo_per_example for _ in range(400)])
    standard_error = many.std(dim=1) / math.sqrt(4000) + terms.std(0) / math.sqrt(400)
    assert ((many.mean(dim=1) - terms.mean(0)).abs() < 4 * standard_error + 1e-3).all()


def test_the_bound_rises_with_k_on_a_trained_model():
    model = fit(VAE(**TINY_MLP))
    x = batch(64, seed=7)
    with torch.no_grad():
        per_example = {}
        for k in (1, 5, 50):
            # (20, B): independent estimates of L_k for each example
            log_weights = [
                model.log_importance_weights(x, k, generator=torch.Generator().manual_seed(100 + r)).log_weights
                for r in range(20)
            ]
            estimates = torch.stack([torch.logsumexp(w, 1) - math.log(k) for w in log_weights])
            per_example[k] = estimates.mean(0)
    for low, high in ((1, 5), (5, 50)):  # paired over the same examples: the gain must beat its noise
        gain = per_example[high] - per_example[low]
        assert gain.mean() > 5 * gain.std() / math.sqrt(len(gain)), (low, high, gain.mean().item(), gain.std().item())


def test_iwae_logs_its_bound_and_trains():
    model = IWAE(num_samples=10, **TINY_MLP)
    x = batch(64, seed=2)
    before = model(x).extras["iwae_bound"].item()
    fit(model)
    terms = model(x)
    assert terms.extras["iwae_bound"].item() > before + 5  # it learned
    assert terms.extras["iwae_bound"].item() >= terms.elbo.item() - 1.0  # the k-sample bound sits above the ELBO


def test_dreg_gives_the_decoder_iwae_s_gradient_and_the_encoder_the_doubly_reparameterised_one():
    x = batch(16, seed=5)
    grads = {}
    for dreg in (False, True):
        torch.manual_seed(0)
        model = IWAE(num_samples=8, dreg=dreg, **TINY_MLP)
        torch.manual_seed(1)
        model(x).loss.backward()
        grads[dreg] = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name in grads[True]:
        if name.startswith("decoder."):
            torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-4, atol=1e-5, msg=name)
    # the encoder's DReG gradient, computed by hand: sum_s w̃_s² (d log w_s / d z_s) (d z_s / d phi)
    torch.manual_seed(0)
    model = IWAE(num_samples=8, dreg=True, **TINY_MLP)
    torch.manual_seed(1)
    posterior = model.encode(x)
    torch.randn(posterior.mu.shape)  # elbo_terms draws its one-sample z first
    samples = model.log_importance_weights(x, 8, posterior=posterior, stop_posterior_gradient=True)
    weights = torch.softmax(samples.log_weights.detach(), dim=1)  # (B, k)
    dlogw_dz = torch.autograd.grad(samples.log_weights.sum(), samples.z, retain_graph=True)[0]  # (k, B, d)
    surrogate = -(weights.t().pow(2).unsqueeze(-1) * dlogw_dz.detach() * samples.z).sum() / len(x)
    model.zero_grad()
    surrogate.backward()
    for name, p in model.named_parameters():
        if name.startswith("encoder."):
            torch.testing.assert_close(grads[True][name], p.grad, rtol=1e-4, atol=1e-5, msg=name)


# -------------------------------------------------------------------------------- β-TCVAE
@pytest.mark.parametrize("sampling", ["minibatch_weighted", "stratified"])
def test_the_three_beta_tcvae_terms_add_up_to_log_q_minus_log_p(sampling):
    model = BetaTCVAE(sampling=sampling, dataset_size=1000, **TINY_MLP)
    terms = model.elbo_terms(batch(48, seed=3))
    parts = model.kl_decomposition(terms)
    total = (terms.posterior.log_prob(terms.z) - standard_normal_log_prob(terms.z)).mean()
    torch.testing.assert_close(sum(parts.values()), total, rtol=1e-5, atol=1e-4)
    assert parts["total_correlation"].item() > -1e-3 or sampling == "stratified"  # MWS: log q(z) >= its product bound


def test_the_stratified_weights_give_each_sample_its_own_example_1_over_n_and_each_row_sums_to_one():
    size, batch_size = 1000, 16
    m = batch_size - 1
    weights = BetaTCVAE(sampling="stratified", dataset_size=size, **TINY_MLP).log_importance_weights_matrix(
        batch_size, size
    )
    weights = weights.exp()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(batch_size, dtype=weights.dtype))
    torch.testing.assert_close(weights.diagonal(), torch.full((batch_size,), 1 / size, dtype=weights.dtype))
    off_diagonal = weights[~torch.eye(batch_size, dtype=torch.bool)].reshape(batch_size, m)
    stratified = (off_diagonal - (size - m) / (size * m)).abs() < 1e-12
    assert stratified.sum(dim=1).tolist() == [1] * batch_size  # one stratified entry per row
    assert ((off_diagonal - 1 / m).abs() < 1e-12).sum(dim=1).tolist() == [m - 1] * batch_size
    assert weights[0, 0] < weights[0, 2] and weights[1, 0] == pytest.approx(1 / m)  # not the first column
    minibatch = BetaTCVAE(dataset_size=size, **TINY_MLP).log_importance_weights_matrix(batch_size, size).exp()
    torch.testing.assert_close(minibatch, torch.full_like(minibatch, 1 / (size * batch_size)))


def test_stratified_sampling_estimates_a_known_aggregate_posterior_without_bias_and_mws_reads_log_n_low():
    """A Gaussian toy whose aggregate posterior is known in closed form: N examples with posteriors
    q(z|x_n) = N(mu_n, s^2 I), so q(z) = (1/N) sum_n q(z|x_n), a mixture, and each marginal q(z_j)
    likewise. Batches are drawn as the data sampler draws them (B distinct examples) and z_i ~ q(z|x_i).

    The stratified estimate of the density q(z_i) (Chen et al., Appendix C.2) is unbiased:
    E[q_hat(z_i) / q(z_i)] = 1, for the joint and for each marginal, within Monte Carlo error.
    Minibatch-weighted sampling as published weighs the batch with 1/(N B), which sums to 1/N: where
    the posteriors overlap (as here) its log densities read about log N low. The two estimators
    therefore do not agree with each other in log space; their sum MI + TC + DWKL does (exact)."""
    from vae_zoo.blocks.likelihoods import DiagonalGaussian

    generator = torch.Generator().manual_seed(0)
    size, batch_size, dims, s = 200, 32, 3, 0.8
    means = 1.5 * torch.randn(size, dims, generator=generator, dtype=torch.float64)
    logvar = torch.full((batch_size, dims), 2 * math.log(s), dtype=torch.float64)

    def exact(z):  # log q(z_i) and log q(z_ij) over all N examples
        log_q_dims = -0.5 * ((z[:, None] - means[None]) ** 2 / s**2 + 2 * math.log(s) + math.log(2 * math.pi))
        return torch.logsumexp(log_q_dims.sum(2), 1) - math.log(size), torch.logsumexp(log_q_dims, 1) - math.log(size)

    models = {
        name: BetaTCVAE(sampling=name, dataset_size=size, **TINY_MLP) for name in ("stratified", "minibatch_weighted")
    }
    ratios = {name: ([], []) for name in models}
    log_errors = {name: [] for name in models}
    for _ in range(600):
        mu = means[torch.randperm(size, generator=generator)[:batch_size]]
        z = mu + s * torch.randn(mu.shape, generator=generator, dtype=torch.float64)
        true_joint, true_dims = exact(z)
        for name, model in models.items():
            joint, per_dim = model.aggregate_posterior_log_density(z, DiagonalGaussian(mu, logvar))
            ratios[name][0].append((joint - true_joint).exp().mean())
            ratios[name][1].append((per_dim - true_dims).exp().mean(0))
            log_errors[name].append((joint - true_joint).mean())
    joint_ratio, dims_ratio = torch.stack(ratios["stratified"][0]), torch.stack(ratios["stratified"][1])
    for values in (joint_ratio, *dims_ratio.t()):
        standard_error = values.std() / math.sqrt(len(values))
        assert abs(values.mean().item() - 1) < 4 * standard_error.item() + 1e-3, (values.mean(), standard_error)
    stratified_log_error = torch.stack(log_errors["stratified"]).mean().item()
    minibatch_log_error = torch.stack(log_errors["minibatch_weighted"]).mean().item()
    assert -0.3 < stratified_log_error < 0  # the log of an unbiased estimate: only its Jensen gap (here -0.19)
    assert minibatch_log_error == pytest.approx(-math.log(size), abs=0.5)


def test_beta_tcvae_without_a_training_set_size_names_model_dataset_size():
    model = BetaTCVAE(**TINY_MLP)  # no fit, no datamodule: N unknown
    with pytest.raises(ConfigError, match=r"model\.dataset_size"):
        model(batch(8))
    assert BetaTCVAE(dataset_size=500, **TINY_MLP).training_set_size() == 500
    with pytest.raises(ConfigError, match="dataset_size"):
        BetaTCVAE(dataset_size=0, **TINY_MLP)


def test_beta_tcvae_reads_the_training_set_size_from_the_data(tmp_path):
    result = train(
        compose_config(["model=beta_tcvae", *TINY_SPRITES, "trainer.max_epochs=1", "test=false"], output_dir=tmp_path)
    )
    assert int(result.experiment.model.dataset_size) == 256
    assert {"val/mutual_information", "val/total_correlation", "val/dimension_wise_kl"} <= set(result.metrics)


# ------------------------------------------------------------------------------ FactorVAE
FACTOR_VAE = ["model=factor_vae", "model.discriminator_hidden=[64,64]", *TINY_SPRITES, "test=false"]


def test_factor_vae_steps_both_optimizers_and_clips_its_own_step(tmp_path):
    cfg = compose_config([*FACTOR_VAE, "trainer.max_epochs=1", "trainer.gradient_clip_val=1e4"], output_dir=tmp_path)
    from vae_zoo.run.experiment import build

    torch.manual_seed(0)
    initial = {name: p.detach().clone() for name, p in build(cfg).model.named_parameters()}
    result = train(cfg)
    model = result.experiment.model
    moved = {name: not torch.equal(initial[name], p.detach()) for name, p in model.named_parameters()}
    assert all(v for n, v in moved.items() if n.startswith("discriminator.")) and all(
        v for n, v in moved.items() if n.startswith("decoder.")
    )
    assert model.gradient_clip == (1.0e4, "norm") and result.experiment.trainer.gradient_clip_val is None
    assert {"train/tc_estimate", "train/discriminator_accuracy", "val/tc_estimate"} <= set(result.metrics)


def test_factor_vae_stopped_and_resumed_matches_an_unbroken_run(tmp_path):
    straight = train(compose_config([*FACTOR_VAE, "trainer.max_epochs=2"], output_dir=tmp_path / "straight"))
    train(compose_config([*FACTOR_VAE, "trainer.max_epochs=1"], output_dir=tmp_path / "first"))
    resumed = train(
        compose_config(
            [*FACTOR_VAE, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"],
            output_dir=tmp_path / "resumed",
        )
    )
    for key in ("val/elbo", "val/tc_estimate", "val/discriminator_accuracy"):
        assert resumed.metrics[key] == pytest.approx(straight.metrics[key], rel=1e-5, abs=1e-6), key
    a, b = straight.experiment.trainer.optimizers, resumed.experiment.trainer.optimizers
    assert len(a) == len(b) == 2
    for one, other in zip(a, b):  # both optimizers' moments restored and continued identically
        for state_a, state_b in zip(one.state.values(), other.state.values()):
            torch.testing.assert_close(state_a["exp_avg"], state_b["exp_avg"], rtol=1e-5, atol=1e-7)


# -------------------------------------------------------------------------------- DIP-VAE
@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_dip_vae_penalises_the_covariance_of_q_z(dip_type):
    model = DIPVAE(dip_type=dip_type, lambda_od=2.0, lambda_d=3.0, **TINY_MLP)
    terms = model.elbo_terms(batch(40, seed=4))
    loss = model.objective(terms)
    mu = terms.posterior.mu.detach().numpy()
    import numpy as np

    covariance = np.cov(mu, rowvar=False) + (
        np.diag(terms.posterior.logvar.exp().mean(0).detach().numpy()) if dip_type == "ii" else 0
    )
    off = (covariance - np.diag(np.diag(covariance))) ** 2
    expected = terms.recon.item() + terms.kl.item() + 2.0 * off.sum() + 3.0 * ((np.diag(covariance) - 1) ** 2).sum()
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert terms.extras["dip_off_diagonal"].item() == pytest.approx(off.sum(), rel=1e-4)


class L1Penalty(VAE):
    """A new objective that states only its penalty: the base's regulariser path warms it up."""

    def regulariser(self, terms):
        return terms.posterior.mu.abs().sum(dim=1).mean()


@pytest.mark.parametrize("cls", [BetaTCVAE, DIPVAE, FactorVAE, L1Penalty])
def test_a_kl_warm_up_ramps_each_objective_s_regulariser(cls):
    from vae_zoo.blocks.schedules import KLSchedule

    extra = {FactorVAE: {"discriminator_hidden": (16,)}, BetaTCVAE: {"dataset_size": 1000}}.get(cls, {})
    model = cls(kl_schedule=KLSchedule(warmup_steps=100), **extra, **TINY_MLP)
    torch.manual_seed(0)
    terms = model.elbo_terms(batch(24, seed=6))
    model.kl_schedule.set_step(0)
    assert model.objective(terms).item() == pytest.approx(terms.recon.item(), rel=1e-6)  # weight 0: reconstruction only
    model.kl_schedule.set_step(100)
    assert abs(model.objective(terms).item() - terms.recon.item()) > 1e-3  # full weight: the regulariser is back
