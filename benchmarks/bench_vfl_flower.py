"""`pec vfl local` over the real Flower deployment vs scikit-learn on the pooled data, one run.

    .venv/bin/python benchmarks/bench_vfl_flower.py --data default_credit [--key-bits 2048]
    .venv/bin/python benchmarks/bench_vfl_flower.py --data breast
    .venv/bin/python benchmarks/bench_vfl_flower.py --data synthetic --rows 100000 \\
        --brand-features 10 --partner-features 30
    .venv/bin/python benchmarks/bench_vfl_flower.py --data generated --rows 50000 --label speed

For each data set: a stratified 80/20 split (numpy, seed 0) written as four CSV files (brand and
partner, train and test; the partner's rows shuffled), then `pec vfl local` end to end with
`--test-brand/--test-partner` (SuperLink, SuperNode, the partner's own process, `flwr run`,
PSI alignment, training, scoring: message latency included), then scikit-learn's
`LogisticRegression` on the same training rows with all features pooled, scored on the same test
rows. Prints both AUCs, their difference, the wall time, round trips and bytes. Synthetic data:
standard normal features, labels from a logistic model whose weights are spread over both
parties' features. Generated data (`pec.datagen`, the demo's generator): ``--rows`` brand
leads, 60 % of them known to a partner of twice as many people, pooled on the normalized phone
(the people a PSI on phone aligns); the brand's 3 lead features and the partner's 5 numeric tags;
the label is ``--label`` (speed or revenue). Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from federated.metrics import ks_statistic, roc_auc

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def generated(rows: int, label: str) -> pd.DataFrame:
    """The demo's generated leads and partner tags, pooled on the normalized phone."""
    from pec.datagen import DatasetSpec, generate_dataset
    from pec.demo import BRAND_FEATURES, PARTNER_FEATURES
    from psi.normalize import KeyKind, NormalizationRules, normalize_column

    rules = NormalizationRules()
    with tempfile.TemporaryDirectory(prefix="pec-bench-gen-") as tmp:
        spec = DatasetSpec(brand_leads=rows, new_leads=0, partner_population=2 * rows)
        generate_dataset(spec, Path(tmp))
        brand = pd.read_csv(Path(tmp) / "brand_leads.csv", dtype=str, keep_default_na=False)
        partner = pd.read_csv(Path(tmp) / "partner_tags.csv", dtype=str, keep_default_na=False)
    brand["id"] = normalize_column(brand["phone"], KeyKind.PHONE, rules).values.to_numpy()
    partner["id"] = normalize_column(partner["mobile"], KeyKind.PHONE, rules).values.to_numpy()
    pooled = brand.dropna(subset=["id"]).merge(partner.dropna(subset=["id"]), on="id")
    # ids as text that does not parse as a number (E.164 "+86..." would be read back as an int)
    frame = pd.DataFrame({"id": "p" + pooled["id"].str.lstrip("+"), "y": pooled[label].astype(int)})
    for column in BRAND_FEATURES:
        frame[f"b_{column}"] = pooled[column].astype(float)
    for column in PARTNER_FEATURES:
        frame[f"p_{column}"] = pooled[column].astype(float)
    return frame.reset_index(drop=True)


def load(name: str, rows: int, brand_features: int, partner_features: int) -> pd.DataFrame:
    """One pooled frame: id, y, b_* (brand) and p_* (partner) columns."""
    if name == "synthetic":
        rng = np.random.default_rng(0)
        xb = rng.standard_normal((rows, brand_features))
        xp = rng.standard_normal((rows, partner_features))
        wb = rng.normal(0, 0.4, brand_features)
        wp = rng.normal(0, 0.4, partner_features)
        p = 1 / (1 + np.exp(-(xb @ wb + xp @ wp - 1.0)))
        frame = pd.DataFrame(xb, columns=[f"b_{i}" for i in range(brand_features)])
        frame[[f"p_{i}" for i in range(partner_features)]] = xp
        frame.insert(0, "y", (rng.random(rows) < p).astype(int))
        frame.insert(0, "id", [f"u{i:07d}" for i in range(rows)])
        return frame
    guest = pd.read_csv(DATASETS / f"{name}_hetero_guest.csv")
    host = pd.read_csv(DATASETS / f"{name}_hetero_host.csv")
    guest = guest.rename(columns={c: f"b_{c}" for c in guest.columns if c.startswith("x")})
    host = host.rename(columns={c: f"p_{c}" for c in host.columns if c.startswith("x")})
    return guest.merge(host, on="id")


def stratified_test(y: np.ndarray, fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    held = [
        rng.permutation(np.flatnonzero(y == c))[: round(fraction * (y == c).sum())] for c in (0, 1)
    ]
    mask = np.zeros(len(y), dtype=bool)
    mask[np.concatenate(held)] = True
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="default_credit")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--brand-features", type=int, default=10)
    parser.add_argument("--partner-features", type=int, default=30)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--label", default="speed", help="generated data: speed or revenue")
    parser.add_argument(
        "--extra", nargs=argparse.REMAINDER, default=[], help="more pec vfl local options"
    )
    args = parser.parse_args()

    if args.data == "generated":
        frame = generated(args.rows, args.label)
    else:
        frame = load(args.data, args.rows, args.brand_features, args.partner_features)
    bcols = [c for c in frame.columns if c.startswith("b_")]
    pcols = [c for c in frame.columns if c.startswith("p_")]
    test = stratified_test(frame["y"].to_numpy())
    with tempfile.TemporaryDirectory(prefix="pec-bench-vfl-") as tmp:
        folder = Path(tmp)
        for part, mask in (("train", ~test), ("test", test)):
            rows = frame[mask]
            rows[["id", "y", *bcols]].to_csv(folder / f"brand_{part}.csv", index=False)
            rows[["id", *pcols]].sample(frac=1.0, random_state=1).to_csv(
                folder / f"partner_{part}.csv", index=False
            )
        command = [
            sys.executable, "-m", "pec", "vfl", "local",
            "--brand", "brand_train.csv", "--partner", "partner_train.csv",
            "--test-brand", "brand_test.csv", "--test-partner", "partner_test.csv",
            "--id", "id", "--label", "y", "--out", "out", "--key-bits", str(args.key_bits),
            "--json", *args.extra,
        ]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        wall = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"pec vfl local failed ({done.returncode}): {done.stderr[-3000:]}")
        metrics = json.loads(done.stdout.strip().splitlines()[-1])
        scores = pd.read_csv(folder / "out" / "test_scores.csv")

    train_rows, test_rows = frame[~test], frame[test].set_index("id")
    started = time.monotonic()
    model = LogisticRegression(max_iter=2000).fit(train_rows[bcols + pcols], train_rows["y"])
    sk_seconds = time.monotonic() - started
    y_test = test_rows.loc[scores["id"], "y"].to_numpy()
    reference = roc_auc(y_test, model.decision_function(test_rows.loc[scores["id"], bcols + pcols]))
    brand_only = LogisticRegression(max_iter=2000).fit(train_rows[bcols], train_rows["y"])
    brand_auc = roc_auc(y_test, brand_only.decision_function(test_rows.loc[scores["id"], bcols]))
    ours = roc_auc(y_test, scores["score"].to_numpy())
    result = {
        "data": args.data if args.data != "generated" else f"generated ({args.label})",
        "rows": len(frame),
        "features": {"brand": len(bcols), "partner": len(pcols)},
        "key_bits": args.key_bits,
        "test_rows": len(scores),
        "auc_federated": round(ours, 4),
        "auc_sklearn_pooled": round(reference, 4),
        "auc_difference": round(ours - reference, 4),
        "auc_brand_only": round(brand_auc, 4),
        "ks_federated": round(ks_statistic(y_test, scores["score"].to_numpy()), 4),
        "epochs": metrics["epochs"],
        "best_epoch": metrics["models"]["y"]["best_epoch"],
        "round_trips": metrics["round_trips"],
        "megabytes_exchanged": round(metrics["bytes_exchanged"] / 2**20, 1),
        "seconds_job_at_brand": metrics["seconds"],
        "seconds_end_to_end": round(wall, 1),
        "seconds_sklearn": round(sk_seconds, 2),
    }
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
