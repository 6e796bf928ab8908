"""`pec lookalike local`: bad input exits 2, nothing written; a real run over Flower on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pec.datagen import generate_tables
from psi.normalize import KeyKind, NormalizationRules, normalize_column

pytestmark = pytest.mark.integration

FEATURES = ("income_level", "car_insurance", "insurance_claims", "car_transactions",
            "car_app_minutes")  # fmt: skip
BASE = ["--brand", "seed.csv", "--partner", "population.csv", "--id", "phone",
        "--partner-id", "mobile", "--id-kind", "phone", "--label", "premium", "--out", "out",
        "--key-bits", "512", *[a for f in FEATURES for a in ("--partner-feature", f)]]  # fmt: skip


def pec(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pec", "lookalike", "local", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )  # fmt: skip


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    data = generate_tables(2_000, 8_000, overlap=0.6, seed=5)
    data.brand[["lead_id", "phone", "premium", "speed"]].to_csv(tmp_path / "seed.csv", index=False)
    data.partner.to_csv(tmp_path / "population.csv", index=False)
    return tmp_path


def phones(values: pd.Series) -> set[str]:
    normalized = normalize_column(values.astype(str), KeyKind.PHONE, NormalizationRules()).values
    return {v for v in normalized.tolist() if v is not None}


def assert_nothing_written(folder: Path) -> None:
    assert not (folder / "out").exists()
    assert not list(folder.glob(".out.*/brand")) and not list(folder.glob(".out.*/partner"))


@pytest.mark.parametrize(
    ("change", "extra", "expected"),
    [
        (lambda s: s.drop(columns=["premium"]), [], "brand file seed.csv: no column 'premium'"),
        (
            lambda s: s.assign(premium=s["premium"].where(s.index != 2, 7)),
            [],
            "brand file seed.csv, row 3, column 'premium': the label must be binary",
        ),
        (
            lambda s: s.assign(phone=s["phone"].where(s.index != 4, s["phone"].iloc[0])),
            [],
            "brand file seed.csv, row 5, column 'phone': duplicate id",
        ),
        (lambda s: s, ["--threshold", "0.5"], "exactly one of --audience-size N or --threshold"),
        (lambda s: s, ["--partner-feature", "nope"], "partner file population.csv: no column"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tables: Path, change, extra, expected) -> None:
    seed = pd.read_csv(tables / "seed.csv", dtype=str)
    valid = normalize_column(seed["phone"].fillna(""), KeyKind.PHONE, NormalizationRules()).values
    seed = seed[valid.notna()].reset_index(drop=True)  # row 1's phone is a valid one
    change(seed).to_csv(tables / "seed.csv", index=False)
    done = pec(*BASE, "--audience-size", "500", *extra, cwd=tables, timeout=120)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr.replace("\n", " ")
    assert_nothing_written(tables)


def test_a_bad_population_row_found_by_the_partner_exits_2(tables: Path) -> None:
    population = pd.read_csv(tables / "population.csv", dtype=str)
    population.loc[6, "car_app_minutes"] = "n/a"
    population.to_csv(tables / "population.csv", index=False)
    done = pec(*BASE, "--audience-size", "500", cwd=tables, timeout=300)
    assert done.returncode == 2, done.stderr
    expected = "population.csv, row 7, column 'car_app_minutes': not a number"
    assert expected in done.stderr.replace("\n", " "), done.stderr
    assert_nothing_written(tables)


def test_lookalike_over_flower_keeps_the_audience_at_the_partner(tables: Path) -> None:
    done = pec(*BASE, "--audience-size", "1500", "--json", cwd=tables)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    out = tables / "out"
    assert {p.name for p in out.iterdir()} == {
        "lookalike.json",
        "lookalike.png",
        "holdout_scores.csv",
        "partner",
    }
    assert {p.name for p in (out / "partner").iterdir()} == {
        "audience.csv",
        "partner_model.json",
        "partner_summary.json",
    }
    assert summary["audience"]["size"] == 1_500 and summary["audience"]["handle"].startswith("aud-")
    assert summary["transport"] == "stream"
    assert summary["holdout"]["auc"] > 0.65
    assert summary["audience"]["expected_lift"] is not None
    assert len(summary["distribution"]["bands"]) == 20
    audience = pd.read_csv(out / "partner" / "audience.csv", dtype=str, keep_default_na=False)
    assert len(audience) == 1_500 and list(audience.columns) == ["mobile", "score"]
    assert (audience["mobile"].str.strip() != "").all()  # everyone can be delivered to
    seed = pd.read_csv(tables / "seed.csv", dtype=str)
    assert not phones(audience["mobile"]) & phones(seed["phone"])  # seed members excluded
    partner_summary = json.loads((out / "partner" / "partner_summary.json").read_text())
    assert partner_summary["audience_handle"] == summary["audience"]["handle"]
    assert partner_summary["matched_excluded"] == summary["aligned_rows"]
    # the brand's file names no partner person and holds none of the partner's weights
    brand_text = (out / "lookalike.json").read_text()
    digits = {p.removeprefix("+86") for p in phones(audience["mobile"])}
    assert not digits & set(re.findall(r"\d{11}", brand_text))
    weights = json.loads((out / "partner" / "partner_model.json").read_text())["weights"]
    assert all(repr(w) not in brand_text for w in weights)
    assert not list(tables.glob(".out.*/brand"))


def test_an_audience_the_partner_refuses_exits_2_and_writes_nothing(tables: Path) -> None:
    done = pec(*BASE, "--threshold", "0.999999", cwd=tables)  # nobody scores that high
    assert done.returncode == 2, done.stderr
    assert "refused the audience" in done.stderr and "minimum of 20" in done.stderr
    assert_nothing_written(tables)
