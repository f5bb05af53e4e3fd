"""Disentanglement scores from ground-truth factors: MIG, the FactorVAE score and DCI.

Every function takes the same two arrays, one row per example of a finite labelled dataset
(e.g. the sprites test split):

* ``factors``: (N, K) integer class indices of the K ground-truth factors (``batch["factors"]``
  of :class:`~vae_zoo.data.sprites.SpritesDataModule`);
* ``codes``: (N, d) float latent codes, usually the posterior means E_q[z|x]
  (:func:`latent_codes_and_factors` collects both from a model).

Torch tensors or numpy arrays are accepted; results are Python floats and numpy arrays.
Everything random is drawn from ``numpy.random.default_rng(seed)``, so a seed gives one answer.

Written by hand, on plain arrays: Google's disentanglement_lib, the reference implementation,
is archived and built on TensorFlow 1 and gin; disent (PyTorch) has these metrics too, but
inside its own framework (its datasets and representation functions). The definitions and
default settings follow disentanglement_lib (Locatello et al. 2019, "Challenging Common
Assumptions in the Unsupervised Learning of Disentangled Representations"), so numbers are
comparable with that study. scikit-learn provides the mutual information and the DCI
classifiers; it is imported inside the functions that need it, so importing vae_zoo.metrics
does not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vae_zoo.models.base import ELBOModule

#: MIG discretises each code dimension into this many equal-width bins (Chen et al. 2018;
#: disentanglement_lib's ``discretizer.num_bins = 20``).
MIG_NUM_BINS = 20
#: FactorVAE score: code dimensions whose standard deviation over the data is below this are
#: pruned as collapsed to the prior (disentanglement_lib's ``prune_dims.threshold = 0.05``).
COLLAPSED_STD_THRESHOLD = 0.05


def _as_numpy(array: Tensor | np.ndarray) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, Tensor) else np.asarray(array)


def _check_factors_and_codes(factors: Tensor | np.ndarray, codes: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) int64 factors and (N, d) float64 codes as numpy, with a clear error otherwise."""
    factors, codes = _as_numpy(factors), _as_numpy(codes)
    if factors.ndim != 2 or codes.ndim != 2 or factors.shape[0] != codes.shape[0]:
        raise ValueError(
            f"Expected factors (N, K) and codes (N, d) for the same N examples, got shapes "
            f"{factors.shape} and {codes.shape}."
        )
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors must be integer class indices, got dtype {factors.dtype}.")
    if not np.isfinite(codes).all():
        raise ValueError("codes contain NaN or inf.")
    return factors.astype(np.int64), codes.astype(np.float64)


# --------------------------------------------------------------------------------- MIG
@dataclass(frozen=True)
class MIGScore:
    """Mutual information gap (Chen et al. 2018).

    Attributes:
        mig: the mean over factors of ``gap_per_factor``, in [0, 1] (1: each factor is captured
            by exactly one code dimension).
        gap_per_factor: (K,) (I(z_j1; v_k) - I(z_j2; v_k)) / H(v_k) for the two code dimensions
            j1, j2 with the largest mutual information with factor k.
        mutual_information: (d, K) I(z_j; v_k) in nats, z_j discretised into ``num_bins`` bins.
        factor_entropy: (K,) H(v_k) in nats.
        num_examples: N, the number of examples it was estimated from (the plug-in MI is biased
            upward by about (bins - 1)(classes - 1) / (2N) nats: compare scores at equal N).
    """

    mig: float
    gap_per_factor: np.ndarray
    mutual_information: np.ndarray
    factor_entropy: np.ndarray
    num_examples: int


def discretize_codes(codes: np.ndarray, num_bins: int = MIG_NUM_BINS) -> np.ndarray:
    """(N, d) float -> (N, d) int bin indices in [1, num_bins]: ``num_bins`` equal-width bins
    over each dimension's observed range (disentanglement_lib's histogram discretiser)."""
    binned = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins=num_bins)[1]
        binned[:, j] = np.digitize(codes[:, j], edges[:-1])
    return binned


def mutual_information_gap(
    factors: Tensor | np.ndarray, codes: Tensor | np.ndarray, num_bins: int = MIG_NUM_BINS
) -> MIGScore:
    """MIG (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs", eq. 7).

        MIG = (1/K) sum_k (I(z_j1; v_k) - I(z_j2; v_k)) / H(v_k),

    with j1, j2 the code dimensions of largest and second largest mutual information with
    factor v_k. The codes are discretised into ``num_bins`` equal-width bins per dimension and
    the mutual information is the plug-in estimate from the joint histogram, in nats, as in
    disentanglement_lib (Locatello et al. 2019 use 10000 examples).

    Args:
        factors: (N, K) int ground-truth class indices.
        codes: (N, d) float latent codes, d >= 2.
        num_bins: bins per code dimension.

    Returns:
        :class:`MIGScore`.

    Raises:
        ValueError: for fewer than two code dimensions or a factor that never varies (H = 0).
    """
    from sklearn.metrics import mutual_info_score

    factors, codes = _check_factors_and_codes(factors, codes)
    num_codes, num_factors = codes.shape[1], factors.shape[1]
    if num_codes < 2:
        raise ValueError(f"MIG needs at least two code dimensions, got {num_codes}.")
    binned = discretize_codes(codes, num_bins)
    mutual_information = np.array(
        [[mutual_info_score(factors[:, k], binned[:, j]) for k in range(num_factors)] for j in range(num_codes)]
    )
    factor_entropy = np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(num_factors)])
    if (factor_entropy <= 0).any():
        constant = np.flatnonzero(factor_entropy <= 0).tolist()
        raise ValueError(f"Factors {constant} take a single value in these examples; MIG divides by their entropy.")
    top_two = -np.sort(-mutual_information, axis=0)[:2]  # (2, K): largest, second largest
    gap_per_factor = (top_two[0] - top_two[1]) / factor_entropy
    return MIGScore(
        mig=float(gap_per_factor.mean()),
        gap_per_factor=gap_per_factor,
        mutual_information=mutual_information,
        factor_entropy=factor_entropy,
        num_examples=codes.shape[0],
    )


# -------------------------------------------------------------------- FactorVAE score
@dataclass(frozen=True)
class FactorVAEScore:
    """The FactorVAE disentanglement metric (Kim & Mnih 2018).

    Attributes:
        eval_accuracy: accuracy of the majority-vote classifier on held-out votes, in [0, 1]
            (the reported score; chance is about 1/K).
        train_accuracy: its accuracy on the votes it was built from.
        num_active_dims: code dimensions kept after pruning collapsed ones.
        votes: (K, d) training votes: how often fixing factor k made dimension j the one of least
            normalised variance.
    """

    eval_accuracy: float
    train_accuracy: float
    num_active_dims: int
    votes: np.ndarray


class FixedFactorSampler:
    """Draws groups of examples that share the value of one factor, from a finite labelled set.

    The generic form of "fix factor k to a random value and sample the others" (Kim & Mnih 2018)
    when only a dataset is available, not a simulator: the value is that of a random example
    (so values are drawn with their frequency in the data, as when disentanglement_lib fixes
    ``factors[0, k]`` of a random batch), and the group is drawn from the examples holding that
    value - without replacement when there are enough of them, else with replacement. Values
    held by a single example are never chosen (one example has no variance).

    Args:
        factors: (N, K) int class indices.
    """

    def __init__(self, factors: np.ndarray):
        self.num_factors = factors.shape[1]
        self.groups: list[list[np.ndarray]] = []  # groups[k]: index arrays, one per value of factor k
        self.group_of_example: list[np.ndarray] = []  # (N,) which group each example is in, -1 if alone
        for k in range(self.num_factors):
            _, group, counts = np.unique(factors[:, k], return_inverse=True, return_counts=True)
            order = np.argsort(group, kind="stable")
            self.groups.append(np.split(order, np.cumsum(counts)[:-1]))
            self.group_of_example.append(np.where(counts[group] >= 2, group, -1))
        self.eligible = [np.flatnonzero(groups >= 0) for groups in self.group_of_example]
        empty = [k for k in range(self.num_factors) if self.eligible[k].size == 0]
        if empty:
            raise ValueError(f"Factors {empty} have no value shared by two examples; cannot fix them.")

    def sample(self, factor_index: int, group_size: int, rng: np.random.Generator) -> np.ndarray:
        """(group_size,) indices of examples sharing a random value of factor ``factor_index``."""
        reference = rng.choice(self.eligible[factor_index])
        pool = self.groups[factor_index][self.group_of_example[factor_index][reference]]
        return rng.choice(pool, size=group_size, replace=pool.size < group_size)


def _factor_vae_votes(
    normalised_codes: np.ndarray,
    sampler: FixedFactorSampler,
    num_votes: int,
    group_size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(K, d_active) vote counts: for each of ``num_votes`` groups with a random factor fixed,
    the dimension of least variance votes for that factor."""
    votes = np.zeros((sampler.num_factors, normalised_codes.shape[1]), dtype=np.int64)
    for _ in range(num_votes):
        factor_index = int(rng.integers(sampler.num_factors))
        group = normalised_codes[sampler.sample(factor_index, group_size, rng)]
        votes[factor_index, np.argmin(group.var(axis=0, ddof=1))] += 1
    return votes


def factor_vae_score(
    factors: Tensor | np.ndarray,
    codes: Tensor | np.ndarray,
    group_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    collapsed_std_threshold: float = COLLAPSED_STD_THRESHOLD,
    seed: int = 0,
) -> FactorVAEScore:
    """The FactorVAE score (Kim & Mnih 2018, "Disentangling by Factorising", section 4).

    1. Normalise each code dimension by its standard deviation over all N examples, and prune
       the dimensions whose standard deviation is below ``collapsed_std_threshold`` (collapsed
       to the prior: their normalised variance would be noise divided by almost nothing).
    2. A vote: pick a factor k uniformly, take ``group_size`` examples sharing a random value of
       it (:class:`FixedFactorSampler`), and find the active dimension of least variance of the
       normalised codes in that group; it votes for k.
    3. The classifier maps each dimension to the factor it got most training votes for
       (majority vote); the score is its accuracy on ``num_eval`` fresh votes.

    Defaults are disentanglement_lib's (group of 64, 10000 training and 5000 evaluation
    votes, threshold 0.05); the global variance uses every given example.

    Args:
        factors: (N, K) int ground-truth class indices.
        codes: (N, d) float latent codes (posterior means, in prior standard deviations).
        group_size: L, examples per vote (>= 2).
        num_train, num_eval: votes to build the classifier from and to score it on.
        collapsed_std_threshold: pruning threshold on a dimension's standard deviation, in code
            units.
        seed: seeds all sampling.

    Returns:
        :class:`FactorVAEScore` (all zeros when every dimension is collapsed, as in
        disentanglement_lib).
    """
    factors, codes = _check_factors_and_codes(factors, codes)
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 to measure a variance, got {group_size}.")
    global_std = codes.std(axis=0, ddof=1)
    active = global_std >= collapsed_std_threshold
    if not active.any():
        return FactorVAEScore(0.0, 0.0, 0, np.zeros((factors.shape[1], codes.shape[1]), dtype=np.int64))
    normalised = codes[:, active] / global_std[active]
    sampler = FixedFactorSampler(factors)
    rng = np.random.default_rng(seed)
    train_votes = _factor_vae_votes(normalised, sampler, num_train, group_size, rng)
    eval_votes = _factor_vae_votes(normalised, sampler, num_eval, group_size, rng)
    factor_of_dim = np.argmax(train_votes, axis=0)  # the majority-vote classifier, (d_active,)
    dims = np.arange(normalised.shape[1])
    votes = np.zeros((factors.shape[1], codes.shape[1]), dtype=np.int64)
    votes[:, active] = train_votes
    return FactorVAEScore(
        eval_accuracy=float(eval_votes[factor_of_dim, dims].sum() / eval_votes.sum()),
        train_accuracy=float(train_votes[factor_of_dim, dims].sum() / train_votes.sum()),
        num_active_dims=int(active.sum()),
        votes=votes,
    )


# ------------------------------------------------------------------- codes of a model
@torch.no_grad()
def latent_codes_and_factors(
    model: ELBOModule, batches: Iterable[Mapping[str, Tensor]], factor_key: str = "factors"
) -> tuple[Tensor, Tensor]:
    """The model's deterministic latent codes and the ground-truth factors of a dataset.

    Args:
        model: an ELBOModule; its :meth:`latent_code` is used (the posterior mean for Gaussian
            posteriors; VQ-VAE's grid of encoder vectors is flattened to one vector).
        batches: yields model-ready batches with ``batch["image"]`` and ``batch[factor_key]``
            ((B, K) int class indices).
        factor_key: where the factors are in a batch.

    Returns:
        codes (N, d) float32 and factors (N, K) int64, on the CPU, in the batches' order.
    """
    was_training = model.training
    model.eval()
    codes, factors = [], []
    try:
        for batch in batches:
            if factor_key not in batch:
                raise KeyError(
                    f"Disentanglement metrics need ground-truth factors under '{factor_key}', but the "
                    f"batches hold {sorted(batch)}. Use data with known factors (data=sprites or dsprites)."
                )
            code = model.latent_code(batch["image"], model.condition(batch))
            codes.append(code.flatten(start_dim=1).float().cpu())
            factors.append(batch[factor_key].long().cpu())
    finally:
        model.train(was_training)
    if not codes:
        raise ValueError("No batches to compute latent codes from.")
    return torch.cat(codes), torch.cat(factors)
