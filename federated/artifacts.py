"""Writing a VFL job's results: each party's model part, the model card, metrics and plots.

The brand's and the partner's artifacts are separate: the brand's part (its weights, intercept
and standardization) never contains anything of the partner's, and the partner's part (its
weights and standardization) stays on the partner's side. The model card is what both may see:
feature names per side, data sizes, metrics, the key size and fingerprint. Everything is written
to a temporary folder and moved into place only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federated.job import BrandJobResult, PartnerJob

__all__ = [
    "BRAND_OUTPUTS",
    "PARTNER_OUTPUTS",
    "dump_json",
    "metrics_of",
    "publish_files",
    "staging_dir",
    "write_brand_outputs",
    "write_partner_outputs",
]

BRAND_OUTPUTS = (
    "metrics.json",
    "model_card.json",
    "brand_model.json",
    "test_scores.csv",
    "roc.png",
    "lift.png",
)
"""The brand's files; ``metrics.json`` is moved last and marks a complete result."""
PARTNER_OUTPUTS = ("partner_summary.json", "partner_model.json")


def publish_files(workdir: Path, out: Path, names: tuple[str, ...]) -> None:
    """Move ``names`` from ``workdir`` into ``out``, the first one last (it marks completion)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (out / name).exists() and not (workdir / name).exists():
            (out / name).unlink()
    for name in (*names[1:], names[0]):
        if (workdir / name).exists():
            os.replace(workdir / name, out / name)


def staging_dir(out: Path, job_id: str) -> Path:
    """A fresh hidden folder beside ``out`` where a job's files are written before publishing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in job_id)[:40]
    workdir = out.parent / f".{out.name}.partial-{safe}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    return workdir


def dump_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON."""
    path.write_text(json.dumps(data, indent=2) + "\n")


def metrics_of(result: BrandJobResult) -> dict[str, Any]:
    """``metrics.json``: the first label's figures at the top level, every label under models."""
    models: dict[str, Any] = {}
    for model in result.models:
        entry: dict[str, Any] = {
            "epochs": model.epochs,
            "best_epoch": model.best_epoch,
            "valid_auc_by_epoch": [round(h.valid_auc, 6) for h in model.history],
        }
        entry.update(model.evaluation.to_json() if model.evaluation else {"auc": None, "ks": None})
        models[model.label] = entry
    first = models[result.models[0].label]
    return {
        "label": result.models[0].label,
        "auc": first["auc"],
        "ks": first["ks"],
        "train_rows": result.train_rows,
        "valid_rows": result.valid_rows,
        "test_rows": result.test_rows if result.evaluated_on == "test" else result.holdout_rows,
        "evaluated_on": result.evaluated_on,
        "scored_rows": result.test_rows if result.scored_on == "test" else None,
        "epochs": first["epochs"],
        "seconds": round(result.seconds, 3),
        "aligned_rows": result.aligned_rows,
        "round_trips": result.round_trips,
        "bytes_exchanged": result.bytes_sent + result.bytes_received,
        "models": models,
    }


def _plots(result: BrandJobResult, workdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [m for m in result.models if m.evaluation is not None]
    if not evaluated:
        return
    fig, ax = plt.subplots(figsize=(5, 5))
    for model in evaluated:
        assert model.evaluation is not None
        fpr, tpr = zip(*model.evaluation.roc, strict=True)
        ax.plot(fpr, tpr, label=f"{model.label} (AUC {model.evaluation.auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(workdir / "roc.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / len(evaluated)
    for i, model in enumerate(evaluated):
        assert model.evaluation is not None
        lift = model.evaluation.lift
        xs = np.arange(1, len(lift) + 1) + (i - (len(evaluated) - 1) / 2) * width
        ax.bar(xs, lift, width=width, label=model.label)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="score decile (1 = highest scores)", ylabel="lift", title="Lift by decile")
    ax.set_xticks(range(1, 11))
    ax.legend()
    fig.tight_layout()
    fig.savefig(workdir / "lift.png", dpi=100)
    plt.close(fig)


def write_brand_outputs(
    result: BrandJobResult, out: Path, *, consent: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write the brand's results into ``out``; returns the metrics.

    ``test_scores.csv`` (``id, score`` and, with several labels, ``score_<label>`` per label) is
    written when the models scored test rows.
    """
    workdir = staging_dir(out, result.job_id)
    try:
        metrics = metrics_of(result)
        if result.scored_on == "test":
            scores = pd.DataFrame({"id": result.scored_ids})
            scores["score"] = result.models[0].scores
            if len(result.models) > 1:
                for model in result.models:
                    scores[f"score_{model.label}"] = model.scores
            scores.to_csv(workdir / "test_scores.csv", index=False, float_format="%.6f")
        _plots(result, workdir)
        dump_json(
            workdir / "brand_model.json",
            {
                "job_id": result.job_id,
                "features": list(result.brand_features),
                "standardization": {
                    "mean": result.standardizer.mean.tolist(),
                    "scale": result.standardizer.scale.tolist(),
                },
                "models": {
                    m.label: {"weights": m.weights.tolist(), "intercept": m.intercept}
                    for m in result.models
                },
            },
        )
        dump_json(
            workdir / "model_card.json",
            {
                "job_id": result.job_id,
                "model": "vertical federated logistic regression (Paillier, masked gradients)",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "labels": [m.label for m in result.models],
                "features": {
                    "brand": list(result.brand_features),
                    "partner": list(result.partner_features),
                },
                "data": {
                    "aligned_rows": result.aligned_rows,
                    "train_rows": result.train_rows,
                    "valid_rows": result.valid_rows,
                    "evaluated_on": result.evaluated_on,
                    "evaluation_rows": metrics["test_rows"],
                },
                "metrics": metrics["models"],
                "paillier": {"key_bits": result.key_bits, "fingerprint": result.key_fingerprint},
                "consent": dict(consent) if consent else None,
            },
        )
        dump_json(workdir / "metrics.json", metrics)
        publish_files(workdir, out, BRAND_OUTPUTS)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return metrics


def write_partner_outputs(job: PartnerJob, out: Path) -> dict[str, Any]:
    """Write the partner's part of the models into ``out``; returns its summary."""
    workdir = staging_dir(out, job.job_id)
    try:
        standardizer = job.standardizer
        dump_json(
            workdir / "partner_model.json",
            {
                "job_id": job.job_id,
                "features": list(job.train.feature_names),
                "standardization": None
                if standardizer is None
                else {"mean": standardizer.mean.tolist(), "scale": standardizer.scale.tolist()},
                "models": [{"index": m.index, "weights": m.weights.tolist()} for m in job.models],
            },
        )
        summary = {
            "job_id": job.job_id,
            "role": "partner",
            "rows": len(job.train.ids),
            "aligned_rows": 0 if job.rows is None else len(job.rows),
            "test_rows_scored": 0 if job.test_rows is None else len(job.test_rows),
            "models": len(job.models),
            "seconds": round(time.time() - job.started, 3),
        }
        dump_json(workdir / "partner_summary.json", summary)
        publish_files(workdir, out, PARTNER_OUTPUTS)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return summary
