"""Vertically split data sets from ../shared/datasets, aligned on id, and one trained job."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest


def _find_datasets() -> Path:
    """``$PEC_DATASETS``, else ``../shared/datasets`` beside the checkout, else this workplace's
    ``/work/shared/datasets`` (a fresh clone elsewhere, as CI makes, still finds the data)."""
    candidates = [
        Path(os.environ["PEC_DATASETS"]) if "PEC_DATASETS" in os.environ else None,
        Path(__file__).resolve().parents[3] / "shared" / "datasets",
        Path("/work/shared/datasets"),
    ]
    for candidate in candidates:
        if candidate is not None and (candidate / "breast_hetero_guest.csv").exists():
            return candidate
    return candidates[1]


DATASETS = _find_datasets()


def dataset(name: str) -> Path:
    """The path of a shared data file; skips the test when the data sets are not on this host."""
    path = DATASETS / name
    if not path.exists():
        pytest.skip(f"data set {name} not found under {DATASETS} (set PEC_DATASETS)")
    return path


@dataclass(frozen=True)
class Split:
    """Brand features + labels and partner features, aligned, for train/valid/test."""

    xb: dict[str, npt.NDArray[np.float64]]
    xp: dict[str, npt.NDArray[np.float64]]
    y: dict[str, npt.NDArray[np.float64]]


def stratified_indices(
    y: npt.NDArray[np.float64], fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    held: list[npt.NDArray[np.int64]] = []
    for label in (0.0, 1.0):
        idx = rng.permutation(np.flatnonzero(y == label))
        held.append(idx[: round(fraction * len(idx))])
    out = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(y)), out), out


def load_split(name: str) -> Split:
    pd = pytest.importorskip("pandas")
    guest, host = DATASETS / f"{name}_hetero_guest.csv", DATASETS / f"{name}_hetero_host.csv"
    if not guest.exists() or not host.exists():
        pytest.skip(f"data set {name} not found under {DATASETS}")
    g = pd.read_csv(guest)
    h = pd.read_csv(host)
    df = g.merge(h, on="id", suffixes=("_brand", "_partner"))
    y = df["y"].to_numpy(np.float64)
    xb = df[[c for c in df.columns if c.endswith("_brand")]].to_numpy(np.float64)
    xp = df[[c for c in df.columns if c.endswith("_partner")]].to_numpy(np.float64)
    train, test = stratified_indices(y, 0.2, seed=0)
    fit, valid = stratified_indices(y[train], 0.1, seed=1)
    parts = {"train": train[fit], "valid": train[valid], "test": test, "pooled_train": train}
    return Split(
        xb={k: xb[v] for k, v in parts.items()},
        xp={k: xp[v] for k, v in parts.items()},
        y={k: y[v] for k, v in parts.items()},
    )
