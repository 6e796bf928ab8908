"""Evaluation at the brand: AUC, KS, lift by decile and the ROC curve of a model's scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from federated.metrics import ks_statistic, roc_auc

__all__ = ["Evaluation", "evaluate", "lift_by_decile", "roc_curve"]


@dataclass(frozen=True)
class Evaluation:
    """A model's quality on labeled rows it was not trained on."""

    rows: int
    positives: int
    auc: float
    ks: float
    lift: tuple[float, ...]
    """Positive rate of each score decile (highest scores first) over the overall rate."""
    roc: tuple[tuple[float, float], ...]
    """(false positive rate, true positive rate) points, at most ~200."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able numbers."""
        return {
            "rows": self.rows,
            "positives": self.positives,
            "auc": round(self.auc, 6),
            "ks": round(self.ks, 6),
            "lift_by_decile": [round(v, 4) for v in self.lift],
        }


def lift_by_decile(y: npt.ArrayLike, scores: npt.ArrayLike, bins: int = 10) -> tuple[float, ...]:
    """Positive rate per score band (highest first, equal row counts) over the overall rate."""
    yy = np.asarray(y, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    base = yy.mean()
    if base == 0 or len(yy) < bins:
        raise ValueError(f"lift needs positives and at least {bins} rows")
    return tuple(float(part.mean() / base) for part in np.array_split(yy[order], bins))


def roc_curve(
    y: npt.ArrayLike, scores: npt.ArrayLike, points: int = 200
) -> tuple[tuple[float, float], ...]:
    """The ROC curve, thinned to about ``points`` points (ties kept together)."""
    yy = np.asarray(y, dtype=np.float64)
    ss = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-ss, kind="mergesort")
    tp = np.cumsum(yy[order])
    fp = np.cumsum(1 - yy[order])
    last_of_tie = np.r_[ss[order][1:] != ss[order][:-1], True]
    tpr = np.r_[0.0, tp[last_of_tie] / max(tp[-1], 1)]
    fpr = np.r_[0.0, fp[last_of_tie] / max(fp[-1], 1)]
    keep = np.unique(np.linspace(0, len(tpr) - 1, min(points, len(tpr))).round().astype(int))
    return tuple((float(fpr[i]), float(tpr[i])) for i in keep)


def evaluate(y: npt.ArrayLike, scores: npt.ArrayLike) -> Evaluation | None:
    """AUC, KS, lift and ROC of ``scores`` against 0/1 labels ``y``; None if a class is missing.

    Raises:
        ValueError: shapes differ or labels are not 0/1.
    """
    yy = np.asarray(y, dtype=np.float64)
    if len(np.unique(yy)) < 2:
        return None
    return Evaluation(
        rows=len(yy),
        positives=int(yy.sum()),
        auc=roc_auc(yy, scores),
        ks=ks_statistic(yy, scores),
        lift=lift_by_decile(yy, scores) if len(yy) >= 10 else (),
        roc=roc_curve(yy, scores),
    )
