"""Writing a lookalike job's results: the brand's summary and plot, the partner's audience.

The brand's folder gets ``lookalike.json`` (the released distribution, the audience handle, its
size, the expected lift, holdout metrics), ``lookalike.png`` (the distribution and the lift by
holdout decile) and ``holdout_scores.csv`` (its own holdout people: id, label, 0-1 score, from
which the expected lift is computed); nothing in it names a partner person. The partner's folder
gets the audience (``audience.csv``: its own ids of the selected people, best first, with their
linear score), its part of the model and a summary: the member list never leaves the partner.
Files are written to a temporary folder and moved into place only when complete, the summary
last.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federated.artifacts import dump_json, publish_files, staging_dir
from federated.lookalike import LookalikePartnerJob, LookalikeResult

__all__ = [
    "BRAND_LOOKALIKE_OUTPUTS",
    "PARTNER_LOOKALIKE_OUTPUTS",
    "lookalike_summary",
    "peak_rss_mib",
    "write_brand_lookalike",
    "write_partner_audience",
]

BRAND_LOOKALIKE_OUTPUTS = ("lookalike.json", "lookalike.png", "holdout_scores.csv")
"""The brand's files; ``lookalike.json`` is moved last and marks a complete result."""
PARTNER_LOOKALIKE_OUTPUTS = ("partner_summary.json", "audience.csv", "partner_model.json")
"""The partner's files; ``partner_summary.json`` is moved last."""


def peak_rss_mib() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child (MiB, Linux)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"process": round(own, 1), "largest_child": round(children, 1)}


def lookalike_summary(result: LookalikeResult) -> dict[str, Any]:
    """``lookalike.json``: everything the brand learned, as plain JSON."""
    job, model = result.job, result.job.models[0]
    evaluation = result.evaluation
    released = [b.count for b in result.bands if b.count is not None]
    return {
        "job_id": job.job_id,
        "label": result.label,
        "distribution": {
            "bands": [
                {"low": round(b.low, 6), "high": round(b.high, 6), "count": b.count}
                for b in result.bands
            ],
            "min_cell": result.min_cell,
            "suppressed_bands": sum(b.count is None for b in result.bands),
            "released_people": int(sum(released)),
            "counts": "people the brand does not have (matched people are excluded)",
        },
        "audience": {
            "handle": result.audience_handle,
            "size": result.audience_size,
            "chosen_by": "threshold" if result.audience_choice.threshold is not None else "size",
            "threshold": result.audience_choice.threshold,
            "requested_size": result.audience_choice.size,
            "cut_score": round(result.cut_score, 6),
            "expected_lift": None
            if result.expected_lift is None
            else round(result.expected_lift, 4),
            "holdout_rows_at_cut": result.holdout_rows_at_cut,
            "where": "the member list stays with the partner (seed members excluded)",
        },
        "holdout": {
            "rows": len(result.holdout_labels),
            "positives": int(result.holdout_labels.sum()),
            **(evaluation.to_json() if evaluation else {"auc": None, "ks": None}),
        },
        "model": {
            "features": {"brand": [], "partner": list(job.partner_features)},
            "intercept": round(model.intercept, 6),
            "epochs": model.epochs,
            "best_epoch": model.best_epoch,
            "valid_auc_by_epoch": [round(h.valid_auc, 6) for h in model.history],
            "paillier": {"key_bits": job.key_bits, "fingerprint": job.key_fingerprint},
        },
        "aligned_rows": job.aligned_rows,
        "train_rows": job.train_rows,
        "valid_rows": job.valid_rows,
        "round_trips": result.round_trips,
        "seconds": round(result.seconds, 3),
        "phase_seconds": result.phase_seconds,
    }


def _plot(result: LookalikeResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    mids = [(b.low + b.high) / 2 for b in result.bands]
    width = result.bands[0].high - result.bands[0].low
    counts = [b.count or 0 for b in result.bands]
    colors = ["#bbbbbb" if b.count is None else "#4477aa" for b in result.bands]
    left.bar(mids, counts, width=width * 0.9, color=colors)
    left.axvline(result.cut_score, color="#cc3311", linestyle="--", linewidth=1)
    left.set(
        xlabel="lookalike score",
        ylabel="people (grey: suppressed)",
        title=f"Partner population by score; audience {result.audience_size:,}",
    )
    left.set_yscale("symlog", linthresh=max(result.min_cell, 1))
    evaluation = result.evaluation
    if evaluation is not None and evaluation.lift:
        xs = np.arange(1, len(evaluation.lift) + 1)
        right.bar(xs, evaluation.lift, color="#4477aa")
        right.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        right.set_xticks(xs)
    lift = "n/a" if result.expected_lift is None else f"{result.expected_lift:.2f}x"
    right.set(
        xlabel="holdout score decile (1 = highest)",
        ylabel="lift",
        title=f"Lift on the holdout; audience expected {lift}",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_brand_lookalike(
    result: LookalikeResult, out: Path, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write the brand's results (plus ``extra`` top-level fields) into ``out``; returns them."""
    workdir = staging_dir(out, result.job.job_id)
    try:
        summary = lookalike_summary(result) | dict(extra or {})
        _plot(result, workdir / "lookalike.png")
        pd.DataFrame(
            {
                "id": result.job.scored_ids,
                result.label: result.holdout_labels.astype(int),
                "score": result.holdout_scores,
            }
        ).to_csv(workdir / "holdout_scores.csv", index=False, float_format="%.6f")
        dump_json(workdir / "lookalike.json", summary)
        publish_files(workdir, out, BRAND_LOOKALIKE_OUTPUTS)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return summary


def write_partner_audience(
    job: LookalikePartnerJob, out: Path, subjects: pd.Series | None = None
) -> dict[str, Any]:
    """Write the partner's audience, its part of the model and its summary into ``out``.

    ``subjects`` maps the population's id values to the partner's own subject ids (a node's
    dataset ``subject_column``): given, the audience carries them first, for activation.

    Raises:
        ValueError: the job has not selected an audience.
    """
    if job.audience_rows is None or job.population_scores is None or job.standardizer is None:
        raise ValueError("the job has no audience to write")
    workdir = staging_dir(out, job.job_id)
    try:
        started = time.perf_counter()
        ids = job.train.ids
        name = str(ids.name) if ids.name is not None else "id"
        rows = job.audience_rows
        audience = pd.DataFrame(
            {name: ids.iloc[rows].to_numpy(), "score": job.population_scores[rows]}
        )
        if subjects is not None:
            column = str(subjects.name or "subject_id")
            audience.insert(0, column, audience[name].map(subjects).fillna("").to_numpy())
        audience.to_csv(workdir / "audience.csv", index=False, float_format="%.6f")
        dump_json(
            workdir / "partner_model.json",
            {
                "job_id": job.job_id,
                "features": list(job.train.feature_names),
                "standardization": {
                    "mean": job.standardizer.mean.tolist(),
                    "scale": job.standardizer.scale.tolist(),
                },
                "weights": job.models[0].weights.tolist(),
            },
        )
        summary = {
            "job_id": job.job_id,
            "role": "partner",
            "population": len(ids),
            "matched_excluded": 0 if job.rows is None else len(job.rows),
            "without_id_excluded": len(job.without_id),
            "audience_handle": job.audience_handle,
            "audience_size": len(rows),
            "min_cell": job.min_cell,
            "scoring_seconds": round(job.scoring_seconds, 3),
            "writing_seconds": round(time.perf_counter() - started, 3),
            "seconds": round(time.time() - job.started, 3),
            "peak_rss_mib": peak_rss_mib(),
        }
        dump_json(workdir / "partner_summary.json", summary)
        publish_files(workdir, out, PARTNER_LOOKALIKE_OUTPUTS)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return summary
