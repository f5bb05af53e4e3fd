"""AUROC / AUPRC of anomaly scores against scikit-learn, and the negative-ELBO scores."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from test_metrics_likelihood import analytic_elbo, linear_gaussian_vae, sample_data, set_imperfect_encoder

from vae_zoo.metrics import negative_elbo_scores, ood_detection_scores


def sklearn_reference(scores_in, scores_out):
    labels = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))]
    scores = np.r_[scores_in, scores_out]
    return roc_auc_score(labels, scores), average_precision_score(labels, scores)


@pytest.mark.parametrize(
    "num_in, num_out, ties, offset",
    [
        (200, 50, False, 0.0),  # continuous scores, no ties
        (300, 300, False, 0.0),
        (100, 400, True, 0.0),  # integer scores: many ties within and across the two sets
        (500, 40, True, 0.0),
        (200, 80, False, 600.0),  # NLL-sized scores (nats): a sigmoid would make them all 1.0
        (150, 150, True, 1000.0),
    ],
)
def test_auroc_and_auprc_match_sklearn(num_in, num_out, ties, offset):
    rng = np.random.default_rng(num_in + num_out)
    scores_in = rng.normal(0.0, 3.0, num_in)
    scores_out = rng.normal(1.5, 3.0, num_out)  # overlapping: AUROC well inside (0.5, 1)
    if ties:
        scores_in, scores_out = scores_in.round(), scores_out.round()
    scores_in, scores_out = scores_in + offset, scores_out + offset
    result = ood_detection_scores(
        torch.tensor(scores_in, dtype=torch.float32), torch.tensor(scores_out, dtype=torch.float32)
    )
    auroc, auprc = sklearn_reference(np.float32(scores_in), np.float32(scores_out))
    assert 0.55 < auroc < 0.95
    assert result.auroc == pytest.approx(auroc, abs=1e-6)
    assert result.auprc == pytest.approx(auprc, abs=1e-6)
    assert (result.num_in_distribution, result.num_out_of_distribution) == (num_in, num_out)


def test_separated_scores_give_one_and_reversed_scores_zero():
    scores_in, scores_out = torch.linspace(500.0, 600.0, 50), torch.linspace(600.5, 900.0, 20)
    perfect = ood_detection_scores(scores_in, scores_out)
    assert perfect.auroc == 1.0 and perfect.auprc == 1.0
    reversed_ = ood_detection_scores(scores_out, scores_in)  # OOD always scores lower
    assert reversed_.auroc == 0.0
    assert reversed_.auprc == pytest.approx(sklearn_reference(scores_out.numpy(), scores_in.numpy())[1])


def test_nan_and_empty_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        ood_detection_scores(torch.tensor([1.0, float("nan")]), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="in- and out-of-distribution"):
        ood_detection_scores(torch.tensor([]), torch.tensor([2.0]))


def test_negative_elbo_scores_match_the_closed_form_elbo_and_detect_shifted_data():
    model = linear_gaussian_vae(seed=0)
    set_imperfect_encoder(model)
    x = sample_data(model, 100, seed=1)
    batches = [{"image": x[i : i + 32]} for i in range(0, 100, 32)]
    # a near-deterministic posterior makes the one-sample ELBO its closed form, example by example
    with torch.no_grad():
        model.encoder.net[1][0].bias[2:] = -25.0
    scores = negative_elbo_scores(model, batches)
    assert scores.shape == (100,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, -analytic_elbo(model, x).float(), rtol=1e-5, atol=1e-4)
    # with a wide posterior the score is stochastic; averaging samples estimates -ELBO
    set_imperfect_encoder(model)
    torch.manual_seed(2)
    averaged = negative_elbo_scores(model, batches, num_samples=400)
    assert (averaged - -analytic_elbo(model, x).float()).abs().mean() < 0.1
    # the scores rank data from elsewhere as anomalous
    shifted = [{"image": batch["image"] + 3.0} for batch in batches]
    detection = ood_detection_scores(negative_elbo_scores(model, batches), negative_elbo_scores(model, shifted))
    assert detection.auroc > 0.95 and detection.auprc > 0.95
