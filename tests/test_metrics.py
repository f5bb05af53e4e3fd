"""Model metrics against values computed another way."""

import numpy as np
import torch
from test_models import make_vae

from vae_zoo.metrics import active_units, posterior_mean_variance


def test_active_units_match_numpy_covariance_of_posterior_means():
    torch.manual_seed(0)
    model = make_vae(latent_dim=6)
    with torch.no_grad():  # make two dimensions constant: inactive by construction
        head = model.encoder.net[-1][-1]
        head.weight[[1, 4]] = 0.0
        head.bias[[1, 4]] = 0.3
        head.weight[[0, 2, 3, 5]] *= 20
    images = torch.rand(300, 1, 28, 28).round()
    batches = [{"image": images[i : i + 64]} for i in range(0, 300, 64)]
    variances = posterior_mean_variance(model, batches)
    means = model.encode(images).mu.detach().numpy()
    np.testing.assert_allclose(variances.numpy(), np.diag(np.cov(means, rowvar=False)), rtol=1e-4, atol=1e-7)
    assert variances[[1, 4]].max() < 1e-10
    assert active_units(model, batches) == int((np.diag(np.cov(means, rowvar=False)) > 0.01).sum()) == 4
