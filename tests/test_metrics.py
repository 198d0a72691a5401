"""Evaluation metrics on synthetic cases with known answers."""

import math

import numpy as np
import pytest

from mien.evaluate import metrics as M

# Shrout & Fleiss (1979), Table 2: four judges rate six targets.
SHROUT_FLEISS_TABLE_2 = np.array([
    [9, 2, 5, 8],
    [6, 1, 3, 2],
    [8, 4, 6, 8],
    [7, 1, 2, 6],
    [10, 5, 6, 9],
    [6, 2, 4, 7],
])


def test_icc_3_1_reproduces_shrout_fleiss_table_4():
    # Their Table 4 gives ICC(3,1) = .71; from the Table 3 mean squares (BMS 11.24, EMS 1.02):
    # (11.2417 - 1.0194) / (11.2417 + 3 * 1.0194) = 0.7148.
    assert M.icc_3_1(SHROUT_FLEISS_TABLE_2) == pytest.approx(0.7148, abs=1e-3)
    assert round(M.icc_3_1(SHROUT_FLEISS_TABLE_2), 2) == 0.71


def test_icc_3_1_perfect_agreement_and_consistency():
    truth = np.array([0.0, 1.0, 2.5, 4.0, 5.0])
    assert M.icc_3_1(np.stack([truth, truth], 1)) == pytest.approx(1.0)
    # Consistency, not absolute agreement: a constant offset between raters does not lower it.
    assert M.icc_3_1(np.stack([truth, truth + 1.5], 1)) == pytest.approx(1.0)
    # Reversed order: perfectly inconsistent.
    assert M.icc_3_1(np.stack([truth, truth[::-1]], 1)) == pytest.approx(-1.0)


def test_icc_3_1_undefined_cases():
    assert math.isnan(M.icc_3_1(np.ones((1, 2))))
    assert math.isnan(M.icc_3_1(np.ones((4, 2))))


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    # For commuting (here diagonal) covariances: d² = |mu1-mu2|² + sum (sqrt(a_i) - sqrt(b_i))².
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(5 + 1 + 1)


def test_frechet_distance_general_covariance_and_symmetry():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = x @ x.T + np.eye(5), y @ y.T + np.eye(5)
    mu = np.zeros(5)
    assert M.frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-8)
    assert M.frechet_distance(mu, s1, mu, s2) == pytest.approx(M.frechet_distance(mu, s2, mu, s1), rel=1e-8)
    # Tr((s1 s2)^½) through the symmetric form agrees with sqrtm on full-rank input.
    from scipy.linalg import sqrtm

    assert M._trace_sqrt_product(s1, s2) == pytest.approx(np.trace(sqrtm(s1 @ s2)).real, rel=1e-8)


def test_frechet_from_samples_converges_and_survives_rank_deficiency():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, size=(20000, 2))
    y = rng.normal([3.0, 0.0], [2.0, 1.0], size=(20000, 2))
    assert M.frechet_from_samples(x, y) == pytest.approx(9.0 + 1.0, rel=0.03)
    few = rng.normal(size=(4, 30))  # fewer samples than dimensions: singular covariances
    assert M.frechet_from_samples(few, few) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(M.frechet_from_samples(few[:1], few))


def test_verification_identical_and_different_descriptors():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 0.05, size=(1, 128))
    far = a + 1.0 / np.sqrt(128)  # Euclidean distance exactly 1.0
    assert M.verified(a, a)[0, 0]
    assert M.cosine(a, a)[0, 0] == pytest.approx(1.0)
    assert M.euclidean(a, far)[0, 0] == pytest.approx(1.0)
    assert not M.verified(a, far)[0, 0]
    assert M.verified(a, np.vstack([a, far])).tolist() == [[True, False]]


def test_pearson_mae_and_accuracy():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert M.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert M.pearson(x, -x) == pytest.approx(-1.0)
    assert M.pearson(x, np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)
    assert math.isnan(M.pearson(x, np.ones(4)))
    assert M.mae(x, x + np.array([1, -1, 2, 0])) == pytest.approx(1.0)
    labels = ("a", "b", "c")
    true, pred = ["a", "a", "b", "c"], ["a", "b", "b", "a"]
    assert M.accuracy(true, pred) == 0.5
    assert M.per_label_accuracy(true, pred, labels) == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert M.confusion(true, pred, labels).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert math.isnan(M.safe_ratio(0.5, 0.0))


def test_blendshape_distance_and_spread():
    a = np.zeros((2, 52))
    b = a.copy()
    b[1, :4] = 0.5
    assert M.blendshape_distance(a, b).tolist() == [0.0, 1.0]
    assert M.mean_pairwise_distance(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])) == pytest.approx(10 / 3)
