"""Evaluation metrics as pure functions on arrays: no models, no files, no globals.

Each function states its definition and source; ``mien.evaluate.scoring`` writes the same definitions
into ``results.json`` and the report. NaN means "undefined" (too few values), never an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.linalg

# dlib's face recognition model card (dlib.net, "dlib_face_recognition_resnet_model_v1"): two
# descriptors belong to the same person when their Euclidean distance is below 0.6. face-api.js
# ports the same network and uses the same threshold (FaceMatcher's default distanceThreshold).
DLIB_THRESHOLD = 0.6


# ----------------------------------------------------------------------------------------------
# identity


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows of ``a`` (N, D) with the rows of ``b`` (M, D) → (N, M)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` (N, D) and ``b`` (M, D) → (N, M)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)


def verified(a: np.ndarray, b: np.ndarray, threshold: float = DLIB_THRESHOLD) -> np.ndarray:
    """(N, M) bool: the raw 128-D dlib descriptors are the same person (L2 distance < threshold)."""
    return euclidean(a, b) < threshold


# ----------------------------------------------------------------------------------------------
# classification


def accuracy(true: Sequence[str], pred: Sequence[str]) -> float:
    """Share of predictions equal to the true label (NaN for no items)."""
    true, pred = np.asarray(true), np.asarray(pred)
    return float(np.mean(true == pred)) if len(true) else float("nan")


def per_label_accuracy(true: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy among the items whose true label is each label (recall per class; NaN where none)."""
    true, pred = np.asarray(true), np.asarray(pred)
    return {lab: accuracy(true[true == lab], pred[true == lab]) for lab in labels}


def confusion(true: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """(L, L) counts: row = true label, column = predicted label, in ``labels`` order."""
    index = {lab: i for i, lab in enumerate(labels)}
    out = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(true, pred):
        out[index[t], index[p]] += 1
    return out


def safe_ratio(num: float, den: float) -> float:
    """num / den, NaN when either is undefined or den is 0 (a normalised accuracy)."""
    if not (np.isfinite(num) and np.isfinite(den)) or den == 0:
        return float("nan")
    return float(num / den)


# ----------------------------------------------------------------------------------------------
# agreement between requested and measured values


def mae(x: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute error, mean |x − y| (NaN for no values)."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    return float(np.mean(np.abs(x - y))) if x.size else float("nan")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; NaN when fewer than 2 values or either side is constant."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def icc_3_1(ratings: np.ndarray) -> float:
    """ICC(3,1) of an (n targets × k raters) table: two-way mixed model, consistency, single rater.

    Shrout & Fleiss (1979, Psychological Bulletin 86(2), Table 1 and eq. for Case 3):
    ICC(3,1) = (BMS − EMS) / (BMS + (k − 1)·EMS), with BMS the between-targets mean square and EMS
    the residual mean square of the two-way ANOVA (rater means removed, so a constant offset between
    raters does not lower it). NaN with fewer than 2 targets or raters, or no variance at all.
    """
    r = np.asarray(ratings, np.float64)
    n, k = r.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = r.mean()
    ss_targets = k * np.sum((r.mean(1) - grand) ** 2)
    ss_raters = n * np.sum((r.mean(0) - grand) ** 2)
    ss_error = np.sum((r - grand) ** 2) - ss_targets - ss_raters
    bms = ss_targets / (n - 1)
    ems = ss_error / ((n - 1) * (k - 1))
    den = bms + (k - 1) * ems
    return float((bms - ems) / den) if den > 1e-12 else float("nan")


# ----------------------------------------------------------------------------------------------
# distributions


def fit_gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of the rows of ``x`` (N, D)."""
    x = np.asarray(x, np.float64)
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, sigma1) and N(mu2, sigma2).

    d² = ‖mu1 − mu2‖² + Tr(sigma1 + sigma2 − 2·(sigma1·sigma2)^½) (Dowson & Landau 1982), as used
    for FID by Heusel et al. (2017). Numerical fixes as in their reference implementation (TTUR
    ``fid.py``): when the product's square root is not finite, add ``eps``·I to both covariances;
    drop an imaginary part that is numerical noise (largest |imag| ≤ 1e-3). Where TTUR raises on a
    larger imaginary part (rank-deficient covariances: fewer samples than dimensions), we use the
    same trace computed stably instead: Tr((sigma1·sigma2)^½) = Tr((A·sigma2·A)^½) with A = sigma1^½,
    a symmetric PSD matrix whose eigenvalues are real (similar matrices share eigenvalues).
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on singular input; handled below
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean) and np.max(np.abs(covmean.imag)) > 1e-3:
        tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    else:
        tr_covmean = float(np.trace(np.real(covmean)))
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return float(max(value, 0.0))


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((sigma1·sigma2)^½) for symmetric PSD inputs, through symmetric eigendecompositions."""
    w, v = np.linalg.eigh(sigma1)
    half = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = np.linalg.eigvalsh(half @ sigma2 @ half)
    return float(np.sqrt(np.clip(inner, 0.0, None)).sum())


def frechet_from_samples(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``x`` and ``y`` (NaN if either has < 2 rows)."""
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    return frechet_distance(*fit_gaussian(x), *fit_gaussian(y))


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance over all unordered pairs of rows of ``x`` (NaN for < 2 rows)."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return float("nan")
    d = euclidean(x, x)
    return float(d[np.triu_indices(len(x), 1)].mean())


# ----------------------------------------------------------------------------------------------
# expression space


def blendshape_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between 52-D MediaPipe blendshape vectors (rows of a and b, paired) → (N,).

    Scores are in [0, 1], so the distance lies in [0, √52]; 0 means the same measured movement.
    """
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    return np.linalg.norm(a - b, axis=1)


def nanmean(values: Sequence[float]) -> float:
    """Mean ignoring NaN; NaN (without a warning) when nothing is left."""
    v = np.asarray(list(values), np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")
