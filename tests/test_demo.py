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
def test_demo_runs_every_job_on_consented_input_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "pec", "demo", "--out", str(out), "--brand-rows", "1500",
         "--new-leads", "200", "--partner-rows", "3000", "--key-bits", "1024", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # consent: every job used only consented rows, and the ledger verified
    assert summary["consent"]["verified"]
    brand = pd.read_csv(out / "data" / "brand_leads.csv", dtype=str, keep_default_na=False)
    for job, record in summary["consent"]["jobs"].items():
        used = pd.read_csv(out / job / "input" / "brand_leads.csv", dtype=str)
        table = record["tables"]["brand_leads.csv"]
        assert table["rows"] == len(brand) and table["kept"] == len(used) < len(brand), job
        assert sum(record["excluded"].values()) > 0
        manifest = json.loads((out / job / "manifest.json").read_text())
        assert manifest["consent"]["tree_head"]["tree_size"] == summary["consent"]["events"]
        assert manifest["outputs"], job
    # overlap
    assert summary["overlap"] == summary["expected_overlap"] > 0
    assert not (out / "overlap" / "result" / "left.csv").exists()
    # lead scoring: two models, one score per consented new lead per model
    lead = summary["lead_scoring"]
    assert set(lead["auc"]) == {"speed", "revenue"}
    assert all(auc > 0.6 for auc in lead["auc"].values()), lead
    scores = pd.read_csv(out / "lead_scoring" / "result" / "new_lead_scores.csv")
    new = pd.read_csv(out / "lead_scoring" / "input" / "brand_new_leads.csv", dtype=str)
    assert scores["lead_id"].tolist() == new["lead_id"].tolist()
    assert 0 < lead["new_leads_matched"] < lead["new_leads_scored"] == len(new)
    assert scores[["score_speed", "score_revenue"]].apply(lambda c: c.between(0, 1)).all().all()
    assert not (out / "lead_scoring" / "result" / "partner_model.json").exists()
    # lookalike: the audience stays with the partner; the brand has its handle, size and lift
    lal = summary["lookalike"]
    assert lal["audience_size"] == 300 and lal["audience_handle"].startswith("aud-")
    assert lal["holdout_auc"] > 0.6
    brand_files = json.dumps(
        json.loads((out / "lookalike" / "result" / "lookalike.json").read_text())
    )
    audience = pd.read_csv(out / "lookalike" / "result" / "partner" / "audience.csv", dtype=str)
    assert len(audience) == 300
    assert not any(member in brand_files for member in audience.iloc[:, 0].dropna().head(50))
    # enrichment, aggregate, matching
    assert summary["enriched_rows"] == summary["expected_overlap"]
    enriched = pd.read_csv(out / "enrichment" / "result" / "left.csv", dtype=str)
    assert {"lead_id", "income_level", "car_insurance"} <= set(enriched.columns)
    released = {k: v for k, v in summary["competitor_cells"].items() if v is not None}
    assert all(v >= 20 for v in released.values())
    assert (out / "matching" / "result" / "right.csv").exists()
    assert not (out / "matching" / "result" / "left.csv").exists()
    # the report is one self-contained page with the plots inline
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 6
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for section in ("Consent", "Overlap", "Lead scoring", "Lookalike", "Enrichment", "Aggregate",
                    "Matching", "Audit manifests"):  # fmt: skip
        assert f"<h2>{section}" in page


@pytest.mark.unit
def test_generated_tables_are_reproducible_and_messy() -> None:
    a = generate_tables(200, 400, seed=3)
    b = generate_tables(200, 400, seed=3)
    pd.testing.assert_frame_equal(a.brand, b.brand)
    assert a.brand["phone"].str.contains(r"\+86|0086|\(|-| ").any()
    assert {"speed", "revenue", "lost"} <= set(a.brand.columns)
    assert (a.brand["phone"] == "").any()
    assert 0 < expected_overlap(a.brand, a.partner) <= a.shared_people
