"""Datasets that are SQL tables: read in chunks as text, registered by name, consent-cut in jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy

from parties.config import NodeConfig
from parties.jobs import JobSpec
from parties.jobstore import JobState
from parties.node import InMemoryPeerTransport, PecNode
from pec.errors import InputError
from pec.tables import iter_sql_table
from tests.parties.node_helpers import OVERLAP_SPEC, make_homes, open_ledger, phone


def _write(url: str, table: str, frame: pd.DataFrame) -> None:
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        frame.to_sql(table, engine, index=False, if_exists="replace")
    finally:
        engine.dispose()


@pytest.mark.unit
def test_a_sqlite_table_streams_in_chunks_as_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    _write(url, "leads", pd.DataFrame({"lead_id": ["a", "b", "c"], "visits": [1, None, 3]}))
    chunks = list(iter_sql_table(url, "leads", chunk_rows=2))
    assert [len(c) for c in chunks] == [2, 1]
    frame = pd.concat(chunks)
    assert frame["lead_id"].tolist() == ["a", "b", "c"]
    assert frame["visits"].tolist() == ["1.0", "", "3.0"] and list(frame.index) == [0, 1, 2]


@pytest.mark.unit
def test_a_missing_table_or_database_is_an_error_without_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    _write(url, "leads", pd.DataFrame({"lead_id": ["a"]}))
    with pytest.raises(InputError, match="'nope': cannot be read") as caught:
        list(iter_sql_table(url, "nope"))
    assert "crm.db" not in str(caught.value)
    with pytest.raises(InputError, match="bad database URL"):
        list(iter_sql_table("nosuchdialect://user:secret@host/db", "leads"))


@pytest.mark.postgres
def test_a_postgresql_table_streams(pg_url: str) -> None:
    _write(pg_url, "people", pd.DataFrame({"subject_id": [f"s{i}" for i in range(5)]}))
    frame = pd.concat(iter_sql_table(pg_url, "public.people", chunk_rows=2))
    assert frame["subject_id"].tolist() == [f"s{i}" for i in range(5)]


@pytest.mark.integration
def test_a_job_on_a_sql_dataset_takes_exactly_its_consented_rows(tmp_path: Path) -> None:
    homes = make_homes(tmp_path)
    url = f"sqlite:///{tmp_path / 'brand-crm.db'}"
    leads = pd.DataFrame({"subject_id": [f"b{i}" for i in range(40)],
                          "phone": [phone(i) for i in range(40)]})  # fmt: skip
    _write(url, "crm_leads", leads)
    added = subprocess.run(
        [sys.executable, "-m", "pec", "node", "add-dataset", "--home", str(homes.brand), "leads",
         "--sql-url", url, "--sql-table", "crm_leads", "--subject-column", "subject_id"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    dataset = NodeConfig.load(homes.brand).datasets["leads"]
    assert (dataset.path, dataset.sql_table) == ("", "crm_leads")
    missing = subprocess.run(
        [sys.executable, "-m", "pec", "node", "add-dataset", "--home", str(homes.brand), "x",
         "--sql-url", url, "--sql-table", "crm_leads", "--subject-column", "person"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and "no column 'person'" in missing.stderr
    transport = InMemoryPeerTransport()
    with open_ledger(homes.brand) as bl, open_ledger(homes.partner) as pl:
        brand = PecNode.open(homes.brand, bl, transport=transport)
        partner = PecNode.open(homes.partner, pl, transport=transport)
        transport.nodes = {"http://127.0.0.1:8701": partner}
        try:
            job = brand.submit(JobSpec.model_validate(OVERLAP_SPEC))
            assert job.state is JobState.APPROVED, job.reason
            cohort = brand.manifest(job.job_id)["cohorts"]["brand"]
            assert (cohort["dataset_rows"], cohort["input_rows"]) == (40, 30)
            taken = pd.read_csv(brand.job_dir(job.job_id) / "input.csv", dtype=str)
            assert taken["subject_id"].tolist() == [f"b{i}" for i in range(30)]
        finally:
            brand.store.close()
            partner.store.close()
