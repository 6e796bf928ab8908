"""The README's first command at a small size: two node processes, six jobs through the API."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from parties.config import NodeConfig
from pec.datagen import generate_tables
from pec.demo import expected_overlap

JOBS = ("overlap", "lead_scoring", "lookalike", "enrichment", "aggregate", "matching")


def _processes_using(path: Path) -> list[int]:
    """PIDs whose command line mentions ``path`` (node, SuperLink, SuperNode, apps)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.mark.e2e
def test_demo_runs_the_six_jobs_between_two_nodes_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "pec", "demo", "--out", str(out), "--brand-rows", "1500",
         "--new-leads", "200", "--partner-rows", "3000", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    brand, partner = (
        Path(summary["nodes"]["brand"]["home"]),
        Path(summary["nodes"]["partner"]["home"]),
    )
    folders = {
        job: (brand / "jobs" / job_id, partner / "jobs" / job_id)
        for job, job_id in summary["jobs"].items()
    }
    assert set(folders) == set(JOBS)
    # both nodes ran as their own processes and are stopped, with everything they started
    assert not _processes_using(out)
    assert not (out / "nodes.json").exists()
    for side in ("brand", "partner"):
        log = Path(summary["nodes"][side]["log"]).read_text()
        assert "serving on" in log and "Finished server process" in log, log[-2000:]

    # consent: both ledgers imported and verified; each side used only its consented rows
    consent = summary["consent"]
    assert consent["verified"] and consent["events"] > 0 and consent["partner_events"] > 0
    for job, cohort in consent["jobs"].items():
        mine, theirs = folders[job]
        assert cohort["rows_used"] == len(pd.read_csv(mine / "input.csv", dtype=str)) > 0, job
        assert cohort["partner_rows_used"] == len(pd.read_csv(theirs / "input.csv", dtype=str))
        assert cohort["rows_used"] < cohort["brand_rows"] and sum(cohort["excluded"].values())
        assert cohort["partner_rows_used"] < cohort["partner_rows"] == 3000
        assert cohort["verified"], job  # each node re-checked its cohorts against its ledger
        saved = json.loads((out / "manifests" / f"{job}.json").read_text())
        assert saved["manifest"]["state"] == saved["partner_manifest"]["state"] == "completed"
        assert saved["manifest"]["decisions"][0]["approved"] is True
    assert summary["manifests_verified"]

    # overlap: the PSI count equals the plaintext truth on the two consented inputs; no rows
    brand_in, partner_in = (
        pd.read_csv(f / "input.csv", dtype=str, keep_default_na=False) for f in folders["overlap"]
    )
    assert (
        summary["overlap"] == summary["expected_overlap"] == expected_overlap(brand_in, partner_in)
    )
    assert summary["overlap"] > 100
    assert not [p for f in folders["overlap"] for p in f.rglob("*.csv") if p.name != "input.csv"]

    # lead scoring: two models, one score per consented new lead per model, in the named table
    lead = summary["lead_scoring"]
    assert set(lead["auc"]) == {"speed", "revenue"}
    assert all(auc > 0.6 for auc in lead["auc"].values()), lead
    mine, theirs = folders["lead_scoring"]
    scores = pd.read_csv(mine / "scores.csv")
    new = pd.read_csv(mine / "score_input.csv", dtype=str)
    assert scores["lead_id"].tolist() == new["lead_id"].tolist()
    assert 0 < lead["new_leads_matched"] < lead["new_leads_scored"] == len(new)
    assert scores[["score_speed", "score_revenue"]].apply(lambda c: c.between(0, 1)).all().all()
    registered = NodeConfig.load(brand).datasets["lead_scores"]  # a table in the brand's database
    assert (
        registered.sql_table == "lead_scores"
        and registered.written_by == summary["jobs"]["lead_scoring"]
    )
    assert registered.sql_url.endswith("/brand-node/outputs.sqlite3")
    assert not list(mine.rglob("partner_model.json")) and list(theirs.rglob("partner_model.json"))

    # lookalike: the audience stays with the partner; the brand has its handle, size and lift
    lal = summary["lookalike"]
    assert lal["audience_size"] == 300 and lal["audience_handle"].startswith("aud-")
    assert lal["holdout_auc"] > 0.6 and lal["expected_lift"] > 1.5
    mine, theirs = folders["lookalike"]
    audience = pd.read_csv(theirs / "out" / "audience.csv", dtype=str)
    assert len(audience) == 300
    brand_text = " ".join(p.read_text(errors="ignore") for p in mine.rglob("*") if p.is_file())
    assert list(audience.columns) == ["person_id", "mobile", "score"]
    assert not any(member in brand_text for member in audience["mobile"].dropna().head(100))

    # enrichment: the allowed tags for the brand's matched customers; the partner learns no rows
    mine, theirs = folders["enrichment"]
    enriched = pd.read_csv(mine / "out" / "left.csv", dtype=str)
    assert {"lead_id", "income_level", "car_insurance"} <= set(enriched.columns)
    assert "car_app_minutes" not in enriched.columns
    inputs = [
        pd.read_csv(f / "input.csv", dtype=str, keep_default_na=False) for f in (mine, theirs)
    ]
    assert summary["enriched_rows"] == len(enriched) == expected_overlap(*inputs)
    assert not list(theirs.rglob("right.csv"))

    # aggregate: only cells at or above the minimum are released
    released = {k: v for k, v in summary["competitor_cells"].items() if v is not None}
    assert released and all(v >= 20 for v in released.values())
    assert 0 < summary["lost_leads_known"] <= summary["lost_leads"]
    assert any(" x " in cell for cell in summary["competitor_cells"])  # brand x price tier
    for cell, count in released.items():
        assert summary["competitor_shares"][cell] == round(count / summary["lost_leads_known"], 4)

    # matching: only the partner learns the matched set
    mine, theirs = folders["matching"]
    matched = pd.read_csv(theirs / "out" / "right.csv", dtype=str)
    assert len(matched) == summary["matched_partner_rows"] > 0
    assert not list(mine.rglob("left.csv"))

    # the report: one self-contained page with the plots inline
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 6
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for section in ("Consent", "Overlap", "Lead scoring", "Lookalike", "Enrichment", "Aggregate",
                    "Matching", "Audit manifests"):  # fmt: skip
        assert f"<h2>{section}" in page
    assert summary["jobs"]["lookalike"] in page  # the manifests are in it


@pytest.mark.unit
def test_generated_tables_are_reproducible_and_messy() -> None:
    a = generate_tables(200, 400, seed=3)
    b = generate_tables(200, 400, seed=3)
    pd.testing.assert_frame_equal(a.brand, b.brand)
    assert a.brand["phone"].str.contains(r"\+86|0086|\(|-| ").any()
    assert {"speed", "revenue", "lost"} <= set(a.brand.columns)
    assert (a.brand["phone"] == "").any()
    assert 0 < expected_overlap(a.brand, a.partner) <= a.shared_people
