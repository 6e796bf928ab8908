"""`pec lookalike local` on generated data vs a pooled-data oracle, one run; time and peak memory.

    .venv/bin/python benchmarks/bench_lookalike.py --seed-rows 20000 --population 200000 \\
        --audience-size 20000
    flock /tmp/pec-bench.lock .venv/bin/python benchmarks/bench_lookalike.py \\
        --seed-rows 10000 --population 5000000 --audience-size 1000000 --data /tmp/pec-lal-5m

The data come from `pec data generate`'s generator (`pec.datagen`), streamed to `--data` once and
reused when the folder already holds the same spec: the brand's leads (`brand_leads.csv`, the
seed: phone and the 0/1 `--label`) and the partner's tag table (`partner_tags.csv`, the whole
population: mobile and five numeric tags). Then `pec lookalike local` end to end (SuperLink,
SuperNode, the partner's own process, `flwr run`, PSI alignment of the seed with the whole
population, Paillier training, population scoring, distribution, audience written at the
partner). The oracle is scikit-learn's `LogisticRegression` on the pooled data: the same partner
features and labels, joined on the normalized phone, trained on the aligned rows that are not in
the brand's holdout and scored on the holdout rows (`holdout_scores.csv`) — the same rows ours was
trained and evaluated on. Prints top-decile lift and AUC of both, the checks (at least 3x and at
least 90 % of the oracle's lift), wall time, and each party's peak memory. Run by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from federated.evaluation import lift_by_decile
from federated.metrics import roc_auc
from pec.datagen import DatasetSpec, generate_dataset
from psi.normalize import KeyKind, NormalizationRules, normalize_column

FEATURES = ("income_level", "car_insurance", "insurance_claims", "car_transactions",
            "car_app_minutes")  # fmt: skip


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def ensure_data(folder: Path, spec: DatasetSpec) -> float:
    """Generate the tables unless ``folder`` already holds this spec; returns seconds spent."""
    truth = folder / "truth.json"
    if truth.exists() and json.loads(truth.read_text())["spec"] == asdict(spec):
        return 0.0
    started = time.perf_counter()
    generate_dataset(spec, folder)
    return time.perf_counter() - started


def phones(values: pd.Series) -> pd.Series:
    return normalize_column(values.fillna(""), KeyKind.PHONE, NormalizationRules()).values


def oracle(data: Path, label: str, holdout: pd.DataFrame) -> dict[str, float]:
    """Pooled logistic regression on the same rows; its holdout AUC and top-decile lift."""
    brand = pd.read_csv(
        data / "brand_leads.csv", usecols=["phone", label], dtype={"phone": str},
        keep_default_na=False,
    )  # fmt: skip
    brand["key"] = phones(brand["phone"].str.strip())
    brand = brand.dropna(subset=["key"])
    partner = pd.read_csv(
        data / "partner_tags.csv", usecols=["mobile", *FEATURES], dtype={"mobile": str},
        keep_default_na=False,
    )  # fmt: skip
    partner["key"] = phones(partner["mobile"].str.strip())
    partner = partner.dropna(subset=["key"]).drop_duplicates("key")
    pooled = brand.merge(partner, on="key")
    held_keys = set(phones(holdout["id"].astype(str).str.strip()).dropna())
    is_held = pooled["key"].isin(held_keys)
    train, test = pooled[~is_held], pooled[is_held].set_index("key")
    test = test.loc[phones(holdout["id"].astype(str).str.strip()).to_numpy()]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(train[list(FEATURES)].to_numpy(float), train[label].to_numpy())
    scores = model.decision_function(test[list(FEATURES)].to_numpy(float))
    y = test[label].to_numpy(float)
    return {
        "train_rows": len(train),
        "holdout_rows": len(test),
        "auc": roc_auc(y, scores),
        "top_decile_lift": lift_by_decile(y, scores)[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed-rows", type=int, default=20_000)
    parser.add_argument("--population", type=int, default=200_000)
    parser.add_argument("--audience-size", type=int, default=20_000)
    parser.add_argument("--label", default="premium")
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=7200)
    args = parser.parse_args()

    data = args.data or Path(f"/tmp/pec-lal-{args.seed_rows}-{args.population}")
    out = args.out or data / "run"
    spec = DatasetSpec(
        brand_leads=args.seed_rows, new_leads=0, partner_population=args.population,
        overlap=0.6, seed=7, chunk_rows=200_000,
    )  # fmt: skip
    generated = ensure_data(data, spec)
    load_before = load_average()
    command = [
        sys.executable, "-m", "pec", "lookalike", "local",
        "--brand", str(data / "brand_leads.csv"), "--partner", str(data / "partner_tags.csv"),
        "--id", "phone", "--partner-id", "mobile", "--id-kind", "phone", "--label", args.label,
        "--audience-size", str(args.audience_size), "--out", str(out),
        "--key-bits", str(args.key_bits), "--timeout", str(args.timeout), "--json",
        *[a for f in FEATURES for a in ("--partner-feature", f)],
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"pec lookalike local failed with exit code {done.returncode}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    holdout = pd.read_csv(out / "holdout_scores.csv", dtype={"id": str}, keep_default_na=False)
    y = holdout[args.label].to_numpy(float)
    ours = {
        "auc": roc_auc(y, holdout["score"].to_numpy(float)),
        "top_decile_lift": lift_by_decile(y, holdout["score"].to_numpy(float))[0],
    }
    reference = oracle(data, args.label, holdout)
    audience_rows = sum(1 for _ in (out / "partner" / "audience.csv").open()) - 1
    report = {
        "seed_rows": args.seed_rows,
        "population": args.population,
        "label": args.label,
        "key_bits": args.key_bits,
        "generated_seconds": round(generated, 1),
        "aligned_rows": summary["aligned_rows"],
        "holdout_rows": summary["holdout"]["rows"],
        "holdout_positives": summary["holdout"]["positives"],
        "ours": {k: round(v, 4) for k, v in ours.items()},
        "oracle": {k: round(v, 4) if isinstance(v, float) else v for k, v in reference.items()},
        "lift_vs_random_ok": ours["top_decile_lift"] >= 3.0,
        "lift_vs_oracle": round(ours["top_decile_lift"] / reference["top_decile_lift"], 4),
        "lift_vs_oracle_ok": ours["top_decile_lift"] >= 0.9 * reference["top_decile_lift"],
        "audience": summary["audience"],
        "audience_rows_written": audience_rows,
        "suppressed_bands": summary["distribution"]["suppressed_bands"],
        "epochs": summary["model"]["epochs"],
        "round_trips": summary["round_trips"],
        "seconds_end_to_end": round(wall, 1),
        "seconds_brand_job": summary["seconds"],
        "brand_phase_seconds": summary["phase_seconds"],
        "partner_scoring_seconds": summary["partner"]["scoring_seconds"],
        "partner_writing_seconds": summary["partner"]["writing_seconds"],
        "peak_rss_mib": {
            "brand": summary["peak_rss_mib"],
            "partner": summary["partner"]["peak_rss_mib"],
        },
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
