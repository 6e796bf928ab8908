"""Lead scores as a table the modeler names, in the brand node's own database (SQLite, PG)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from parties.config import Dataset, NodeConfig, NodeRole, init_node
from parties.errors import JobError
from parties.jobstore import make_engine
from parties.outputs import check_scores_table, write_scores_table
from pec.tables import iter_sql_table

SCORES = pd.DataFrame(
    {"lead_id": ["L1", "L2", "L3"], "matched": [1, 0, 1], "score_speed": [0.9, 0.2, 0.55]}
)


@pytest.fixture
def brand(tmp_path: Path, job_db: str) -> tuple[Path, NodeConfig]:
    home = tmp_path / "brand"
    init_node(home, "acme", NodeRole.BRAND)
    config = NodeConfig.load(home)
    if job_db.startswith("postgresql"):
        config.database.url = job_db
        config.save(home)
    return home, config


def _read(dataset: Dataset) -> pd.DataFrame:
    return pd.concat(list(iter_sql_table(dataset.sql_url, dataset.sql_table)), ignore_index=True)


def test_scores_become_a_registered_table_an_earlier_job_may_replace(
    brand: tuple[Path, NodeConfig],
) -> None:
    home, config = brand
    check_scores_table(config, home, "lead_scores")  # a new name
    dataset = write_scores_table(config, home, "lead_scores", SCORES, subject="lead_id",
                                 job_id="job-1")  # fmt: skip
    assert NodeConfig.load(home).datasets["lead_scores"] == dataset
    assert dataset.written_by == "job-1" and dataset.subject_column == "lead_id"
    assert sorted(_read(dataset)["lead_id"]) == ["L1", "L2", "L3"]
    if not config.database.url:  # no job database given: a file of its own, not the job store
        assert dataset.sql_url.endswith("/brand/outputs.sqlite3")
    check_scores_table(config, home, "lead_scores")  # scores a job wrote may be replaced
    again = write_scores_table(config, home, "lead_scores", SCORES.head(1), subject="lead_id",
                               job_id="job-2")  # fmt: skip
    assert again.written_by == "job-2" and len(_read(again)) == 1


def test_a_name_that_holds_other_data_is_refused(brand: tuple[Path, NodeConfig]) -> None:
    home, config = brand
    config.datasets["leads"] = Dataset(path=str(home / "leads.csv"), subject_column="lead_id")
    with pytest.raises(JobError, match="holds no earlier scores"):
        check_scores_table(config, home, "leads")
    engine = make_engine(config.database.outputs_url(home))
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE crm_contacts (id integer)"))
    engine.dispose()
    with pytest.raises(JobError, match="already exists in the node's database") as refused:
        check_scores_table(config, home, "crm_contacts")
    assert "postgresql" not in str(refused.value) and "sqlite" not in str(refused.value)


@pytest.mark.postgres
def test_a_failed_write_leaves_the_earlier_scores(tmp_path: Path, pg_url: str) -> None:
    home = tmp_path / "brand"
    init_node(home, "acme", NodeRole.BRAND)
    config = NodeConfig.load(home)
    config.database.url = pg_url
    first = write_scores_table(config, home, "lead_scores", SCORES, subject="lead_id",
                               job_id="job-1")  # fmt: skip
    bad = SCORES.assign(lead_id=["L1", "L2\x00", "L3"])  # PostgreSQL refuses NUL in text
    with pytest.raises(JobError, match="could not be written"):
        write_scores_table(config, home, "lead_scores", bad, subject="lead_id", job_id="job-2")
    assert sorted(_read(first)["lead_id"]) == ["L1", "L2", "L3"]  # the drop was rolled back
    assert NodeConfig.load(home).datasets["lead_scores"].written_by == "job-1"
