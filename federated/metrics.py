"""Evaluation metrics computed at the brand on its holdout (plain numpy)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _check(
    y: npt.ArrayLike, s: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    yy = np.asarray(y, dtype=np.float64)
    ss = np.asarray(s, dtype=np.float64)
    if yy.shape != ss.shape or yy.ndim != 1:
        raise ValueError("labels and scores must be 1-D arrays of the same length")
    if not np.all((yy == 0) | (yy == 1)):
        raise ValueError("labels must be 0 or 1")
    if yy.min(initial=1) == yy.max(initial=0):
        raise ValueError("both classes must be present")
    return yy, ss


def roc_auc(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann–Whitney, ties counted half).

    Raises:
        ValueError: shapes differ, labels are not 0/1, or one class is missing.
    """
    yy, ss = _check(y, scores)
    # average ranks with ties counted half, vectorized (fine for millions of rows)
    _, inverse, counts = np.unique(ss, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts).astype(np.float64)
    ranks = (upper - (counts - 1) / 2.0)[inverse]
    n_pos = float(yy.sum())
    n_neg = float(len(yy) - n_pos)
    return float((ranks[yy == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ks_statistic(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Kolmogorov–Smirnov statistic: the largest gap between the classes' score CDFs.

    Raises:
        ValueError: shapes differ, labels are not 0/1, or one class is missing.
    """
    yy, ss = _check(y, scores)
    order = np.argsort(-ss, kind="mergesort")
    pos = np.cumsum(yy[order]) / yy.sum()
    neg = np.cumsum(1 - yy[order]) / (1 - yy).sum()
    return float(np.max(np.abs(pos - neg)))


def log_loss(y: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Mean binary cross-entropy.

    Raises:
        ValueError: shapes differ, labels are not 0/1, or one class is missing.
    """
    yy, pp = _check(y, probabilities)
    p = np.clip(pp, 1e-12, 1 - 1e-12)
    return float(-np.mean(yy * np.log(p) + (1 - yy) * np.log(1 - p)))
