"""DCI: disentanglement, completeness and informativeness (Eastwood & Williams 2018), from the
feature importances of one classifier per ground-truth factor. Same inputs as the other scores
(:mod:`vae_zoo.metrics.disentanglement`): ``factors`` (N, K) class indices, ``codes`` (N, d)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from vae_zoo.metrics.disentanglement import _check_factors_and_codes


# ------------------------------------------------------------------------------- DCI
@dataclass(frozen=True)
class DCIScores:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018).

    Attributes:
        disentanglement: in [0, 1]; 1 when each code dimension is important for one factor only.
        completeness: in [0, 1]; 1 when each factor is captured by one code dimension only.
        informativeness_test: mean over factors of the classifiers' accuracy on the held-out
            split (higher is better; the paper reports the error, 1 - this).
        informativeness_train: the same on the training split.
        importance_matrix: (d, K) R_jk, the importance of code dimension j for factor k.
    """

    disentanglement: float
    completeness: float
    informativeness_test: float
    informativeness_train: float
    importance_matrix: np.ndarray


def _normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of each row of a (n, m) matrix of distributions, with log base m: in [0, 1]."""
    num_outcomes = probabilities.shape[1]
    if num_outcomes == 1:
        return np.zeros(probabilities.shape[0])
    p_log_p = np.where(probabilities > 0, probabilities * np.log(np.where(probabilities > 0, probabilities, 1.0)), 0.0)
    return -p_log_p.sum(axis=1) / np.log(num_outcomes)


def disentanglement_and_completeness(importance_matrix: np.ndarray) -> tuple[float, float]:
    """D and C from an importance matrix R (d codes x K factors), Eastwood & Williams 2018, sec. 3.

    * Disentanglement of code j: D_j = 1 - H_K(P_j.), P_jk = R_jk / sum_k R_jk; the total is
      sum_j rho_j D_j with rho_j = sum_k R_jk / sum_jk R_jk (codes that matter more count more).
    * Completeness of factor k: C_k = 1 - H_d(P~_.k), P~_jk = R_jk / sum_j R_jk; the total is
      weighted the same way by factor importance (as in disentanglement_lib; when each factor's
      importances sum to 1, as tree ensembles' do, that is the plain mean over factors).

    Entropies use log base K (resp. d), so each score is in [0, 1]. Codes (factors) with zero
    total importance get weight zero.
    """
    importance = np.abs(np.asarray(importance_matrix, dtype=np.float64))
    total = importance.sum()
    if total <= 0:
        raise ValueError("The importance matrix is all zeros: no code dimension predicts any factor.")
    code_mass, factor_mass = importance.sum(axis=1), importance.sum(axis=0)
    per_code = 1.0 - _normalised_entropy(importance / np.where(code_mass > 0, code_mass, 1.0)[:, None])
    per_factor = 1.0 - _normalised_entropy((importance / np.where(factor_mass > 0, factor_mass, 1.0)).T)
    return float((per_code * code_mass / total).sum()), float((per_factor * factor_mass / total).sum())


def _default_dci_classifier(seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(random_state=seed)


def _importances(classifier: Any) -> np.ndarray:
    """(d,) non-negative importances of a fitted sklearn classifier's input features."""
    if hasattr(classifier, "feature_importances_"):
        return np.abs(classifier.feature_importances_)
    if hasattr(classifier, "coef_"):  # linear models (Eastwood & Williams also use the lasso)
        return np.abs(np.atleast_2d(classifier.coef_)).sum(axis=0)
    raise TypeError(
        f"{type(classifier).__name__} exposes neither feature_importances_ nor coef_; DCI needs one of them."
    )


def dci(
    factors: Tensor | np.ndarray,
    codes: Tensor | np.ndarray,
    classifier: Any | None = None,
    test_fraction: float = 1 / 3,
    seed: int = 0,
) -> DCIScores:
    """DCI (Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of
    Disentangled Representations").

    One classifier per factor predicts its class from all d code dimensions; its feature
    importances form column k of the importance matrix R (d x K), from which
    :func:`disentanglement_and_completeness` computes D and C, and its held-out accuracy is the
    informativeness.

    Classifier choice: by default scikit-learn's ``GradientBoostingClassifier()`` with its
    default settings (100 trees of depth 3) and impurity-based ``feature_importances_``, as in
    disentanglement_lib (Locatello et al. 2019; the original paper used lasso and random
    forests). It is accurate but slow for many classes (it fits one tree per class per stage):
    pass a cheaper prototype, e.g. ``RandomForestClassifier(n_estimators=50)`` or
    ``GradientBoostingClassifier(n_estimators=20)``. Any sklearn classifier with
    ``feature_importances_`` or ``coef_`` works; it is cloned per factor, and its
    ``random_state`` (if it has one) is set to ``seed``.

    Args:
        factors: (N, K) int ground-truth class indices.
        codes: (N, d) float latent codes.
        classifier: an unfitted sklearn classifier to clone per factor (None: the default above).
        test_fraction: share of the N examples held out for informativeness (disentanglement_lib
            uses 10000 train and 5000 test examples: 1/3).
        seed: seeds the split and the classifiers.

    Returns:
        :class:`DCIScores`.
    """
    from sklearn.base import clone

    factors, codes = _check_factors_and_codes(factors, codes)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(codes.shape[0])
    num_test = max(1, round(test_fraction * codes.shape[0]))
    test, train = order[:num_test], order[num_test:]
    prototype = _default_dci_classifier(seed) if classifier is None else classifier
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    train_accuracy, test_accuracy = [], []
    for k in range(factors.shape[1]):
        model = clone(prototype)
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
        model.fit(codes[train], factors[train, k])
        importance[:, k] = _importances(model)
        train_accuracy.append(np.mean(model.predict(codes[train]) == factors[train, k]))
        test_accuracy.append(np.mean(model.predict(codes[test]) == factors[test, k]))
    disentanglement, completeness = disentanglement_and_completeness(importance)
    return DCIScores(
        disentanglement=disentanglement,
        completeness=completeness,
        informativeness_test=float(np.mean(test_accuracy)),
        informativeness_train=float(np.mean(train_accuracy)),
        importance_matrix=importance,
    )
