"""A lead-scoring job between two node processes, and a partner killed in the middle of one.

Generated leads (pec.datagen) on the brand node (PostgreSQL) and generated tags on the partner
node (SQLite), each consent-gated by its own ledger; the job runs the VFL engine over the real
Flower deployment (SuperLink, SuperNode, the partner node as relay target, the direct stream).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from parties.config import Dataset, NodeConfig
from parties.local_flower import free_port
from pec.datagen import DatasetSpec, generate_dataset
from pec.tables import iter_sql_table
from tests.parties.node_helpers import BRAND, PARTNER, consent_rows, make_homes, open_ledger
from tests.parties.test_node_e2e import (
    COMPLIANCE,
    MODELER,
    Cluster,
    _start,
    _wait_ended,
    _wait_health,
    running,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PURPOSE = "marketing.lead_scoring"
PURPOSES = (PURPOSE, "marketing.lookalike", "marketing.enrichment", "analytics.aggregate")
FEATURES = ["income_level", "car_insurance", "insurance_claims", "car_transactions",
            "car_app_minutes"]  # fmt: skip
POLICY = f"""
[[grants]]
brand = "{BRAND}"
purposes = ["{PURPOSE}", "marketing.lookalike", "marketing.enrichment", "analytics.aggregate"]
job_kinds = ["lead_scoring", "lookalike", "enrichment", "aggregate"]
outputs = ["metrics", "scores", "distribution", "audience_size", "tags:income_level",
           "tags:car_insurance", "aggregate:competitor_brand"]
min_cohort = 100
min_overlap = 50
"""
SPEC = {
    "kind": "lead_scoring",
    "purpose": PURPOSE,
    "partner": PARTNER,
    "brand_dataset": "leads_history",
    "partner_dataset": "people",
    "score_dataset": "new_leads",
    "keys": [{"brand": "phone", "partner": "mobile", "kind": "phone"}],
    "labels": ["speed", "revenue"],
    "features": ["web_visits", "test_drive", "days_since_contact"],
    "outputs": ["metrics", "scores"],
    "scores_table": "lead_scores",
}


@pytest.fixture
def lead_cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    homes = make_homes(tmp_path, brand_port=free_port(), partner_port=free_port(),
                       superlink=f"127.0.0.1:{free_port()}", brand_db=pg_url)  # fmt: skip
    data = tmp_path / "generated"
    generate_dataset(DatasetSpec(brand_leads=1_500, new_leads=300, partner_population=3_000,
                                 seed=11), data)  # fmt: skip
    people = pd.read_csv(data / "partner_tags.csv", dtype=str, keep_default_na=False)
    people.to_csv(homes.partner / "people.csv", index=False)
    brand_cfg, partner_cfg = NodeConfig.load(homes.brand), NodeConfig.load(homes.partner)
    for name, file in (("leads_history", "brand_leads.csv"), ("new_leads", "brand_new_leads.csv")):
        brand_cfg.datasets[name] = Dataset(path=str(data / file), subject_column="lead_id")
    people_csv = str(homes.partner / "people.csv")
    partner_cfg.datasets["people"] = Dataset(path=people_csv, subject_column="person_id",
                                             features=FEATURES)  # fmt: skip
    brand_cfg.save(homes.brand)
    partner_cfg.save(homes.partner)
    (homes.partner / "policy.toml").write_text(POLICY)
    leads = [
        *pd.read_csv(data / "brand_leads.csv", dtype=str)["lead_id"],
        *pd.read_csv(data / "brand_new_leads.csv", dtype=str)["lead_id"],
    ]
    with open_ledger(homes.brand, pg_url) as ledger:  # every tenth lead did not consent
        for purpose in PURPOSES:
            ledger.record(
                consent_rows([s for i, s in enumerate(leads) if i % 10], PARTNER, purpose)
            )
    with open_ledger(homes.partner) as ledger:
        for purpose in PURPOSES:
            ledger.record(consent_rows(list(people["person_id"]), BRAND, purpose))
    with running(tmp_path, homes) as cluster:
        yield cluster


def _submit(cluster: Cluster, spec: dict[str, object] = SPEC) -> str:
    answer = httpx.post(f"{cluster.brand_url}/jobs", headers=MODELER, json=spec, timeout=120)
    assert answer.status_code in (200, 201, 202), answer.text
    job = answer.json()
    assert job["state"] in ("approved", "running"), job
    return str(job["job_id"])


def test_a_lead_scoring_job_runs_between_two_node_processes(lead_cluster: Cluster) -> None:
    job_id = _submit(lead_cluster)
    job = _wait_ended(lead_cluster.brand_url, job_id, timeout=400)
    assert job["state"] == "completed", job
    result = httpx.get(f"{lead_cluster.brand_url}/jobs/{job_id}/result", headers=MODELER,
                       timeout=30).json()  # fmt: skip
    metrics, scores = result["outputs"]["metrics"], result["outputs"]["scores"]
    assert set(metrics["models"]) == {"speed", "revenue"}
    assert all(m["auc"] > 0.6 for m in metrics["models"].values()), metrics
    brand_home = lead_cluster.root / "brand"
    table = pd.read_csv(scores["file"])
    consented_new = pd.read_csv(brand_home / "jobs" / job_id / "score_input.csv", dtype=str)
    assert table["lead_id"].tolist() == consented_new["lead_id"].tolist()
    assert scores["rows"] == len(consented_new) and 0 < scores["matched"] < scores["rows"]
    assert table[["score_speed", "score_revenue"]].apply(lambda c: c.between(0, 1)).all().all()
    # the scores are registered under the name the modeler gave, for later jobs and exports
    assert scores["table"] == "lead_scores"
    registered = NodeConfig.load(brand_home).datasets["lead_scores"]
    assert registered.sql_table == "lead_scores" and registered.written_by == job_id
    assert registered.subject_column == "lead_id" and not registered.path
    stored = pd.concat(list(iter_sql_table(registered.sql_url, "lead_scores")), ignore_index=True)
    assert sorted(stored["lead_id"]) == sorted(table["lead_id"])  # in the brand's PostgreSQL
    assert registered.sql_url == NodeConfig.load(brand_home).database.url
    # the partner's part of the model stays with the partner
    assert not list((brand_home / "jobs" / job_id).rglob("partner_model.json"))
    partner_job = _wait_ended(lead_cluster.partner_url, job_id, timeout=60)
    assert partner_job["state"] == "completed"
    assert list((lead_cluster.root / "partner" / "jobs" / job_id).rglob("partner_model.json"))
    manifest = httpx.get(f"{lead_cluster.brand_url}/jobs/{job_id}/manifest",
                         headers=COMPLIANCE, timeout=30).json()  # fmt: skip
    assert set(manifest["cohorts"]) == {"brand", "brand_score", "partner"}
    assert manifest["cohorts"]["brand"]["rows_without_consent"] > 0
    assert manifest["decisions"][0]["approved"] is True


def test_a_partner_killed_mid_job_fails_it_on_both_sides(lead_cluster: Cluster) -> None:
    job_id = _submit(lead_cluster)
    # Kill the partner as soon as training is under way. The brand's ServerApp appends each step
    # to progress.jsonl; the job's own progress lags it by seconds, and on a fast machine the
    # rest of the job (training both models, scoring) can finish within that lag.
    progress = lead_cluster.root / "brand" / "jobs" / job_id / "progress.jsonl"
    deadline = time.monotonic() + 300
    training = False
    while time.monotonic() < deadline and not training:
        with contextlib.suppress(OSError, ValueError):
            stages = [json.loads(line)["stage"] for line in progress.read_text().splitlines()]
            training = any(stage.startswith("train") for stage in stages)
        time.sleep(0.1)
    job = httpx.get(f"{lead_cluster.brand_url}/jobs/{job_id}", headers=COMPLIANCE,
                    timeout=10).json()  # fmt: skip
    assert training and job["state"] == "running", job
    partner = lead_cluster.procs["partner"]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(partner.pid, signal.SIGKILL)
    partner.wait(timeout=10)
    ended = _wait_ended(lead_cluster.brand_url, job_id, timeout=200)
    assert ended["state"] == "failed" and ended["reason"], ended
    assert httpx.get(f"{lead_cluster.brand_url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{lead_cluster.brand_url}/jobs/{job_id}/result", headers=MODELER,
                     timeout=10).status_code != 200  # no partial output  # fmt: skip
    # the partner comes back on the same home: the job it had is failed, its SuperNode replaced
    lead_cluster.procs["partner"] = _start(lead_cluster.root, "partner-again",
                                           lead_cluster.root / "partner")  # fmt: skip
    _wait_health(lead_cluster.partner_url, lead_cluster.procs["partner"])
    theirs = httpx.get(f"{lead_cluster.partner_url}/jobs/{job_id}", headers=COMPLIANCE,
                       timeout=10).json()  # fmt: skip
    assert theirs["state"] == "failed" and "restarted" in theirs["reason"], theirs
    log = (lead_cluster.root / "partner-again.log").read_text()
    assert "left running by a previous run" in log
    groups = json.loads((lead_cluster.root / "partner" / "flower" / "processes.json").read_text())
    assert set(groups) == {"supernode"}


def test_a_lookalike_job_keeps_the_audience_at_the_partner(lead_cluster: Cluster) -> None:
    spec = {
        "kind": "lookalike",
        "purpose": "marketing.lookalike",
        "partner": PARTNER,
        "brand_dataset": "leads_history",
        "partner_dataset": "people",
        "keys": [{"brand": "phone", "partner": "mobile", "kind": "phone"}],
        "labels": ["premium"],
        "audience_size": 300,
        "outputs": ["distribution", "audience_size", "metrics"],
    }
    job_id = _submit(lead_cluster, spec)
    job = _wait_ended(lead_cluster.brand_url, job_id, timeout=400)
    assert job["state"] == "completed", job
    outputs = httpx.get(f"{lead_cluster.brand_url}/jobs/{job_id}/result", headers=MODELER,
                        timeout=30).json()["outputs"]  # fmt: skip
    assert outputs["audience"]["size"] == 300 and outputs["audience"]["handle"].startswith("aud-")
    assert outputs["metrics"]["holdout"]["auc"] > 0.6
    bands = outputs["distribution"]["bands"]
    assert all(b["count"] is None or b["count"] == 0 or b["count"] >= 20 for b in bands)
    theirs = _wait_ended(lead_cluster.partner_url, job_id, timeout=60)
    assert theirs["state"] == "completed"
    partner_out = httpx.get(f"{lead_cluster.partner_url}/jobs/{job_id}/result", headers=MODELER,
                            timeout=30)  # fmt: skip
    audience_file = lead_cluster.root / "partner" / "jobs" / job_id / "out" / "audience.csv"
    members = pd.read_csv(audience_file, dtype=str)
    assert len(members) == 300 and list(members.columns) == ["person_id", "mobile", "score"]
    # for activation: each member's own id at the partner, the one its dataset row holds
    people = pd.read_csv(lead_cluster.root / "partner" / "people.csv", dtype=str)
    expected = people.drop_duplicates("mobile").set_index("mobile")["person_id"]
    assert members["person_id"].tolist() == members["mobile"].map(expected).tolist()
    assert partner_out.status_code in (200, 403)
    # no member reaches the brand: not in its result, not in its job folder
    brand_files = " ".join(
        p.read_text(errors="ignore")
        for p in (lead_cluster.root / "brand" / "jobs" / job_id).rglob("*")
        if p.is_file() and p.suffix in (".json", ".csv")
    ) + json.dumps(outputs)
    assert not any(member in brand_files for member in members["mobile"].dropna().head(100))


def test_an_enrichment_job_gives_the_brand_the_allowed_tags_of_its_matched_leads(
    lead_cluster: Cluster,
) -> None:
    spec = {
        "kind": "enrichment",
        "purpose": "marketing.enrichment",
        "partner": PARTNER,
        "brand_dataset": "leads_history",
        "partner_dataset": "people",
        "keys": [{"brand": "phone", "partner": "mobile", "kind": "phone"}],
        "outputs": ["tags:income_level", "tags:car_insurance"],
    }
    job_id = _submit(lead_cluster, spec)
    job = _wait_ended(lead_cluster.brand_url, job_id, timeout=300)
    assert job["state"] == "completed", job
    outputs = httpx.get(f"{lead_cluster.brand_url}/jobs/{job_id}/result", headers=MODELER,
                        timeout=30).json()["outputs"]  # fmt: skip
    enriched = pd.read_csv(outputs["enrichment"]["file"], dtype=str)
    assert {"lead_id", "income_level", "car_insurance"} <= set(enriched.columns)
    assert "car_app_minutes" not in enriched.columns  # only the tags asked for and allowed
    assert 0 < outputs["enrichment"]["rows"] == enriched["lead_id"].nunique()
    consented = set(pd.read_csv(lead_cluster.root / "brand" / "jobs" / job_id / "input.csv",
                                dtype=str)["lead_id"])  # fmt: skip
    assert set(enriched["lead_id"]) <= consented
    theirs = _wait_ended(lead_cluster.partner_url, job_id, timeout=60)
    assert theirs["state"] == "completed"
    # the partner learns nothing of which leads matched: no rows written on its side
    assert not list((lead_cluster.root / "partner" / "jobs" / job_id).rglob("right.csv"))


def test_an_aggregate_job_releases_only_cells_above_the_minimum(lead_cluster: Cluster) -> None:
    spec = {
        "kind": "aggregate",
        "purpose": "analytics.aggregate",
        "partner": PARTNER,
        "brand_dataset": "leads_history",
        "partner_dataset": "people",
        "keys": [{"brand": "phone", "partner": "mobile", "kind": "phone"}],
        "outputs": ["aggregate:competitor_brand"],
        "min_cell": 60,
    }
    job_id = _submit(lead_cluster, spec)
    job = _wait_ended(lead_cluster.brand_url, job_id, timeout=300)
    assert job["state"] == "completed", job
    result = httpx.get(f"{lead_cluster.brand_url}/jobs/{job_id}/result", headers=MODELER,
                       timeout=30).json()["outputs"]["aggregate"]  # fmt: skip
    cells = result["cells"]
    assert result["group"] == "competitor_brand" and result["intersection"] > 0
    released = {k: v for k, v in cells.items() if v is not None}
    assert released and all(v >= 60 for v in released.values())
    assert result["suppressed"] == sum(v is None for v in cells.values())
    # the plaintext truth, which only a test has: every released count is exact
    root = lead_cluster.root
    people = pd.read_csv(root / "partner" / "people.csv", dtype=str, keep_default_na=False)
    consented = pd.read_csv(root / "brand" / "jobs" / job_id / "input.csv", dtype=str,
                            keep_default_na=False)  # fmt: skip
    from psi.normalize import KeyKind, NormalizationRules, normalize_column

    rules = NormalizationRules()
    mine = set(normalize_column(consented["phone"], KeyKind.PHONE, rules).values.dropna())
    people["key"] = normalize_column(people["mobile"], KeyKind.PHONE, rules).values
    shared = people[people["key"].isin(mine)]
    truth = shared["competitor_brand"].replace("", "(missing)").value_counts().to_dict()
    for group, count in released.items():
        assert truth[group] == count, (group, count, truth[group])
    theirs = _wait_ended(lead_cluster.partner_url, job_id, timeout=60)
    assert theirs["state"] == "completed"
