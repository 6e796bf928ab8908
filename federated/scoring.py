"""Scores for every new lead: the federated score when the partner knows the lead, else the brand's.

A VFL job scores the new leads the PSI matched (``test_scores.csv``): ``σ(x_B·w_B + b + x_P·w_P)``.
A lead the partner does not know has no ``x_P``; it gets ``σ(x_B·w_B + b)``, which is the same
model with the partner's part at its training mean (each party standardizes its features on its
own training rows, so the partner's contribution ``x_P·w_P`` averages 0 over them). This runs on
the brand alone, from ``brand_model.json``; nothing is asked of the partner, which therefore does
not learn which unmatched leads the brand scored. The ``matched`` column says which score a lead
got, so a user can read the two kinds apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pec.errors import InputError

__all__ = ["score_all_leads"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(np.exp(-np.logaddexp(0.0, -z)), dtype=np.float64)


def score_all_leads(
    model_dir: Path, leads: pd.DataFrame, id_column: str, keep: Sequence[str] = ()
) -> pd.DataFrame:
    """One row per lead: ``keep`` columns, ``matched`` (0/1) and ``score_<label>`` per model.

    ``model_dir`` holds a finished job's ``brand_model.json`` and ``test_scores.csv`` (ids of the
    test table's ``id_column``).

    Raises:
        InputError: the model or a brand feature column is missing, or a feature is not numeric.
    """
    try:
        model = json.loads((model_dir / "brand_model.json").read_text())
    except FileNotFoundError:
        raise InputError(f"{model_dir}: no brand_model.json (the job did not finish)") from None
    features = list(model["features"])
    missing = [c for c in (id_column, *features, *keep) if c not in leads.columns]
    if missing:
        raise InputError(f"new leads: missing column(s) {', '.join(map(repr, missing))}")
    x = np.empty((len(leads), len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        values = pd.to_numeric(leads[name], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0]) + 1
            raise InputError(f"new leads, row {row}, column {name!r}: not a number")
        x[:, j] = values.to_numpy(np.float64)
    mean = np.asarray(model["standardization"]["mean"], dtype=np.float64)
    scale = np.asarray(model["standardization"]["scale"], dtype=np.float64)
    z = (x - mean) / scale if features else x
    out = leads[list(keep)].copy().reset_index(drop=True)
    federated = pd.read_csv(model_dir / "test_scores.csv", dtype={"id": str})
    labels = list(model["models"])
    ids = leads[id_column].fillna("").astype(str).str.strip().reset_index(drop=True)
    position = pd.Series(range(len(federated)), index=federated["id"])
    found = ids.map(position)
    matched = found.notna() & (ids != "")
    out["matched"] = matched.astype(int)
    for label in labels:
        part = model["models"][label]
        own = _sigmoid(z @ np.asarray(part["weights"], dtype=np.float64) + float(part["intercept"]))
        column = f"score_{label}" if f"score_{label}" in federated.columns else "score"
        joint = federated[column].to_numpy(np.float64)
        where = found[matched].astype(int).to_numpy()
        own[matched.to_numpy()] = joint[where]
        out[f"score_{label}"] = np.round(own, 6)
    return out
