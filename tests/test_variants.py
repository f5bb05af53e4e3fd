"""Each variant does what its objective says: behaviour that a broken variant would fail."""

from functools import partial

import pytest
import torch

from vae_zoo.blocks.likelihoods import Bernoulli
from vae_zoo.blocks.schedules import KLSchedule
from vae_zoo.data import MNISTDataModule
from vae_zoo.models import VAE, BetaVAE, ConditionalVAE
from vae_zoo.nets import MLPDecoder, MLPEncoder

from conftest import make_mnist_files


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Binarized digit-like fixture: train/val images and labels (label = bar position)."""
    root = make_mnist_files(tmp_path_factory.mktemp("digits"), n_train=1200, n_test=50)
    dm = MNISTDataModule(root=str(root), download=False, val_size=200, binarize="static")
    dm.setup()
    as_float = lambda split: (dm.splits[split]["image"].float() / 255, dm.splits[split]["label"])  # noqa: E731
    return as_float("train"), as_float("val")


def mlp_model(cls=VAE, latent_dim=8, **kwargs):
    return cls(
        encoder=partial(MLPEncoder, hidden=(128,)),
        decoder=partial(MLPDecoder, hidden=(128,)),
        likelihood=Bernoulli(),
        latent_dim=latent_dim,
        image_channels=1,
        image_size=28,
        optimizer=partial(torch.optim.Adam, lr=2e-3),
        **kwargs,
    )


def train(model, digits, steps=300, batch_size=64, trace=None):
    """Plain loop (the schedule stepped like the trainer does); returns terms on the val set."""
    (x, y), (x_val, y_val) = digits
    condition = getattr(model, "encode_labels", lambda labels: None)
    torch.manual_seed(0)
    optimizer = model.configure_optimizers()
    for step in range(steps):
        model.kl_schedule.set_step(step)
        idx = torch.randint(0, len(x), (batch_size,))
        terms = model(x[idx], condition(y[idx]))
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
        if trace is not None:
            trace.append((model.kl_schedule.capacity(), terms.kl.item()))
    torch.manual_seed(1)
    with torch.no_grad():
        return model(x_val, condition(y_val))


def test_larger_beta_gives_lower_kl_and_higher_reconstruction_nll(digits):
    torch.manual_seed(0)
    low = train(mlp_model(BetaVAE, beta=1.0), digits)
    torch.manual_seed(0)
    high = train(mlp_model(BetaVAE, beta=8.0), digits)
    # measured: β=1 KL 11.9 / recon 3.1 nats; β=8 KL 5.1 / recon 15.1
    assert high.kl < 0.7 * low.kl
    assert high.recon > low.recon + 5.0
    # the logged ELBO is the unweighted one for every β
    torch.testing.assert_close(high.elbo, -(high.recon + high.kl))


def test_capacity_objective_makes_the_kl_track_c(digits):
    torch.manual_seed(0)
    schedule = KLSchedule(capacity_max=6.0, capacity_steps=200, gamma=100.0)
    trace = []
    final = train(mlp_model(VAE, kl_schedule=schedule), digits, steps=400, trace=trace)
    # after a few steps the training KL follows C(t) up the ramp and stays at C_max
    for step in range(50, 400, 25):
        capacity, kl = trace[step]
        assert abs(kl - capacity) < 1.0 + 0.15 * capacity, (step, capacity, kl)
    assert abs(final.kl.item() - 6.0) < 1.0


def test_free_bits_keep_every_dimension_above_the_floor(digits):
    """Under strong KL pressure (β = 8) dimensions collapse; with a free-bits floor λ no
    dimension is pushed below λ, so each keeps at least ~λ nats."""
    floor = 0.5
    torch.manual_seed(0)
    plain = train(mlp_model(BetaVAE, beta=8.0), digits)
    torch.manual_seed(0)
    floored = train(mlp_model(BetaVAE, beta=8.0, kl_schedule=KLSchedule(free_bits=floor)), digits)
    # measured: min KL per dim 0.08 nats without, 0.555 with the floor of 0.5
    assert plain.kl_per_dim.min() < 0.5 * floor
    assert floored.kl_per_dim.min() > 0.8 * floor


def test_cvae_uses_the_label(digits):
    torch.manual_seed(0)
    vae = train(mlp_model(VAE, latent_dim=2), digits)
    torch.manual_seed(0)
    model = mlp_model(ConditionalVAE, latent_dim=2, num_classes=10)
    cvae = train(model, digits)
    # the label carries information for free: better reconstructions at equal latent size
    # (measured: 5.6 vs 10.6 nats)
    assert cvae.recon < 0.8 * vae.recon
    # the same z decoded with different labels gives different images: the bar moves with y
    z = torch.zeros(10, 2)
    images = model.generate(z, model.encode_labels(torch.arange(10)))
    bar_rows = images[:, 0, :, 4:24].mean(-1).argmax(-1)
    labels = torch.arange(10)
    assert ((bar_rows >= 2 * labels + 4) & (bar_rows <= 2 * labels + 6)).all(), bar_rows  # rows 2k+4..2k+6


def test_cvae_prior_samples_cycle_through_the_labels():
    model = mlp_model(ConditionalVAE, num_classes=3)
    prior = model.prior_sample(7)
    assert prior["z"].shape == (7, 8)
    assert prior["condition"].argmax(1).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert model.generate(**prior).shape == (7, 1, 28, 28)


def test_cvae_without_its_condition_says_what_to_pass():
    model = mlp_model(ConditionalVAE, num_classes=3)
    x = torch.rand(2, 1, 28, 28).round()
    for call in (lambda: model.encode(x), lambda: model.decode(torch.zeros(2, 8))):  # no default to fall back on
        with pytest.raises(TypeError, match="required positional argument: 'condition'"):
            call()
    for call in (lambda: model.encode(x, None), lambda: model.reconstruct(x), lambda: model.latent_code(x)):
        with pytest.raises(TypeError, match=r"needs the condition, a \(B, 3\) tensor.*encode_labels"):
            call()
    condition = model.encode_labels(torch.tensor([0, 2]))
    assert model.reconstruct(x, condition).shape == x.shape


def test_multi_hot_attributes_condition_the_cvae():
    model = mlp_model(ConditionalVAE, num_classes=5, encoding="multi_hot", label_key="attributes")
    attributes = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]])
    condition = model.condition({"attributes": attributes})
    assert condition.dtype == torch.float32 and torch.equal(condition, attributes.float())
    assert model(torch.rand(2, 1, 28, 28).round(), condition).kl_per_dim.shape == (8,)
