"""Vertically split data sets from ../shared/datasets, aligned on id, and one trained job."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

DATASETS = Path(
    os.environ.get("PEC_DATASETS", Path(__file__).resolve().parents[3] / "shared" / "datasets")
)


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
