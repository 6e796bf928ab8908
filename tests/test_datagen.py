"""The generated dataset: reproducible, chunk-invariant, consistent across tables, with signal."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from consent.model import DATA_CATEGORIES
from consent.model import PURPOSES as CONSENT_PURPOSES
from pec.datagen import BRAND_ID, PARTNER_ID, PURPOSES, DatasetSpec, generate_dataset
from psi.normalize import KeyKind, NormalizationRules, normalize_column

pytestmark = pytest.mark.unit

SPEC = DatasetSpec(brand_leads=1_500, new_leads=300, partner_population=3_000, overlap=0.5, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    generate_dataset(SPEC, out)
    return out


def test_tables_and_truth(dataset: Path) -> None:
    names = sorted(p.name for p in dataset.iterdir())
    assert names == [
        "brand_consent.csv",
        "brand_leads.csv",
        "brand_new_leads.csv",
        "partner_consent.csv",
        "partner_tags.csv",
        "truth.json",
    ]
    truth = json.loads((dataset / "truth.json").read_text())
    leads = pd.read_csv(dataset / "brand_leads.csv", dtype=str, keep_default_na=False)
    assert len(leads) == 1_500 and truth["shared_people"] == 900
    assert truth["base_rates"]["speed"] == round(leads["speed"].astype(int).mean(), 4)
    assert 0.1 < truth["base_rates"]["speed"] < 0.5
    new = pd.read_csv(dataset / "brand_new_leads.csv", dtype=str)
    assert "speed" not in new.columns and len(new) == 300
    assert not set(new["lead_id"]) & set(leads["lead_id"])


def test_chunking_does_not_change_the_data(dataset: Path, tmp_path: Path) -> None:
    generate_dataset(replace(SPEC, chunk_rows=257), tmp_path)
    for name in ("brand_leads.csv", "partner_tags.csv", "brand_consent.csv", "partner_consent.csv"):
        assert (tmp_path / name).read_bytes() == (dataset / name).read_bytes(), name


def test_shared_people_match_by_key_and_others_do_not(dataset: Path) -> None:
    rules = NormalizationRules()
    leads = pd.read_csv(dataset / "brand_leads.csv", dtype=str, keep_default_na=False)
    new = pd.read_csv(dataset / "brand_new_leads.csv", dtype=str, keep_default_na=False)
    partner = pd.read_csv(dataset / "partner_tags.csv", dtype=str, keep_default_na=False)
    brand_phones = pd.concat([leads["phone"], new["phone"]], ignore_index=True)
    mine = normalize_column(brand_phones, KeyKind.PHONE, rules).values.dropna()
    theirs = normalize_column(partner["mobile"], KeyKind.PHONE, rules).values.dropna()
    assert mine.is_unique and theirs.is_unique
    shared = len(set(mine) & set(theirs))
    # 900 shared people, minus those whose phone is missing or broken on either side
    assert 800 < shared <= 900


def test_partner_tags_carry_the_signal(dataset: Path) -> None:
    rules = NormalizationRules()
    leads = pd.read_csv(dataset / "brand_leads.csv", dtype=str, keep_default_na=False)
    partner = pd.read_csv(dataset / "partner_tags.csv", dtype=str, keep_default_na=False)
    leads["k"] = normalize_column(leads["phone"], KeyKind.PHONE, rules).values
    partner["k"] = normalize_column(partner["mobile"], KeyKind.PHONE, rules).values
    joined = leads.dropna(subset=["k"]).merge(partner.dropna(subset=["k"]), on="k")
    income = joined["income_level"].astype(int)
    revenue = joined["revenue"].astype(int)
    assert revenue[income >= 4].mean() > 2 * revenue[income <= 2].mean()
    transactions = joined["car_transactions"].astype(int)
    speed = joined["speed"].astype(int)
    assert np.corrcoef(transactions, speed)[0, 1] > 0.15


def test_consent_events_follow_the_import_format(dataset: Path) -> None:
    events = pd.read_csv(dataset / "brand_consent.csv", dtype=str, keep_default_na=False)
    assert list(events.columns) == [
        "event_id", "subject_id", "action", "purpose", "recipient", "data_categories",
        "legal_basis", "notice_id", "notice_version", "method", "occurred_at", "valid_until",
        "jurisdiction",
    ]  # fmt: skip
    assert events["event_id"].is_unique
    assert set(events["purpose"]) == set(PURPOSES)
    assert {"grant", "refuse", "withdraw"} <= set(events["action"])
    assert PARTNER_ID in set(events["recipient"])
    assert pd.to_datetime(events["occurred_at"], utc=True).notna().all()
    categories = {c for cell in events["data_categories"] for c in cell.split(";")}
    assert categories <= DATA_CATEGORIES and set(events["purpose"]) <= CONSENT_PURPOSES


@pytest.mark.parametrize("name", ["brand_consent.csv", "partner_consent.csv"])
def test_withdrawals_reach_every_purpose(dataset: Path, name: str) -> None:
    events = pd.read_csv(dataset / name, dtype=str, keep_default_na=False)
    withdrawals = events[events["action"] == "withdraw"]
    assert set(withdrawals["purpose"]) == set(PURPOSES)
    per_subject = withdrawals.groupby("subject_id")["purpose"].nunique()
    # some people withdraw every purpose at once, most withdraw one
    assert (per_subject == len(PURPOSES)).sum() > 0
    assert (per_subject == 1).sum() > (per_subject == len(PURPOSES)).sum()
    assert set(per_subject) <= {1, len(PURPOSES)}
    # each withdrawal follows a grant of the same purpose to the same recipient
    grants = events[events["action"] == "grant"]
    granted = set(zip(grants["subject_id"], grants["purpose"], grants["recipient"], strict=True))
    withdrawn = zip(
        withdrawals["subject_id"], withdrawals["purpose"], withdrawals["recipient"], strict=True
    )
    assert all(w in granted for w in withdrawn)
    last_grant = pd.to_datetime(grants.groupby("subject_id")["occurred_at"].max(), utc=True)
    withdrawn_at = pd.to_datetime(withdrawals.set_index("subject_id")["occurred_at"], utc=True)
    assert (withdrawn_at > last_grant.reindex(withdrawn_at.index)).all()


def test_the_partner_consents_for_its_own_people_by_its_own_ids(dataset: Path) -> None:
    people = pd.read_csv(dataset / "partner_tags.csv", dtype=str, keep_default_na=False)
    events = pd.read_csv(dataset / "partner_consent.csv", dtype=str, keep_default_na=False)
    leads = pd.read_csv(dataset / "brand_leads.csv", dtype=str, keep_default_na=False)
    assert people.columns[0] == "person_id" and people["person_id"].is_unique
    assert set(events["subject_id"]) == set(people["person_id"])
    assert not set(people["person_id"]) & set(leads["lead_id"])
    assert events["event_id"].is_unique
    brand_events = pd.read_csv(dataset / "brand_consent.csv", dtype=str)
    assert not set(events["event_id"]) & set(brand_events["event_id"])
    assert {"grant", "refuse", "withdraw"} <= set(events["action"])
    granted = events[(events["action"] == "grant")]
    assert BRAND_ID in set(granted["recipient"]) and len(set(granted["recipient"])) > 1
    assert set(events["purpose"]) == set(PURPOSES)
    truth = json.loads((dataset / "truth.json").read_text())
    assert truth["partner_consent_events"] == len(events) and truth["brand_id"] == BRAND_ID


@pytest.mark.e2e
def test_consent_events_import_into_the_ledger(dataset: Path, tmp_path: Path) -> None:
    env = os.environ | {"PEC_HOME": str(tmp_path / "home")}

    def pec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pec", "consent", *args],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    imported = pec("import", str(dataset / "brand_consent.csv"))
    assert imported.returncode == 0, imported.stderr
    cohort = pec(
        "cohort", "--purpose", "marketing.lead_scoring", "--recipient", PARTNER_ID,
        "--out", str(tmp_path / "cohort.csv"),
    )  # fmt: skip
    assert cohort.returncode == 0, cohort.stderr
    receipt = json.loads((tmp_path / "cohort.receipt.json").read_text())
    excluded = receipt["excluded"]
    assert receipt["eligible"] > 0 and excluded["refused"] > 0 and excluded["withdrawn"] > 0
    assert excluded["other_recipient"] > 0


def test_spec_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError):
        DatasetSpec(brand_leads=100, new_leads=0, partner_population=10, overlap=0.5)
    with pytest.raises(ValueError):
        DatasetSpec(overlap=1.5)
