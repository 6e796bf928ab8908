"""The README's first command, at a small size: generated data, three jobs, the expected overlap."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pec.datagen import generate_tables
from pec.demo import expected_overlap


@pytest.mark.e2e
def test_demo_runs_three_jobs_and_finds_the_expected_overlap(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pec",
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--brand-rows",
            "300",
            "--partner-rows",
            "900",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["overlap"] == summary["expected_overlap"] > 0
    assert summary["enriched_rows"] == summary["expected_overlap"]
    enriched = pd.read_csv(tmp_path / "demo" / "enrichment" / "left.csv", dtype=str)
    assert {"lead_id", "income_level", "car_insurance"} <= set(enriched.columns)
    assert not (tmp_path / "demo" / "overlap" / "left.csv").exists()
    assert (tmp_path / "demo" / "matching" / "right.csv").exists()
    lost = pd.read_csv(tmp_path / "demo" / "data" / "brand_lost_leads.csv", dtype=str)
    partner = pd.read_csv(tmp_path / "demo" / "data" / "partner_tags.csv", dtype=str)
    assert summary["lost_leads"] == len(lost)
    assert 0 < summary["lost_leads_known"] <= len(lost)
    released = {k: v for k, v in summary["competitor_cells"].items() if v is not None}
    assert all(v >= 20 for v in released.values())
    assert set(summary["competitor_cells"]) <= set(partner["competitor_brand"].fillna("")) | {
        "(missing)"
    }
    assert not (tmp_path / "demo" / "matching" / "left.csv").exists()


@pytest.mark.unit
def test_generated_tables_are_reproducible_and_messy() -> None:
    a = generate_tables(200, 400, seed=3)
    b = generate_tables(200, 400, seed=3)
    pd.testing.assert_frame_equal(a.brand, b.brand)
    assert a.brand["phone"].str.contains(r"\+86|0086|\(|-| ").any()
    assert {"speed", "revenue", "lost"} <= set(a.brand.columns)
    assert (a.brand["phone"] == "").any()
    assert 0 < expected_overlap(a.brand, a.partner) <= a.shared_people
