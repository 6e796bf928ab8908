"""Tables a modeler names: lead scores written into the brand node's own database.

A lead-scoring job with ``scores_table`` writes its scores (one row per consented new lead: the
subject id, ``matched`` and a 0-1 score per model) as a SQL table of that name in the node's
database (``[database] url``, else ``outputs.sqlite3`` in the node home), in one transaction, and
registers it as a dataset for later jobs and exports. Only a table an earlier job wrote may be
replaced: a name that is already a registered dataset or an existing table of that database
(the node's own records included) is refused when the job is submitted, before anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from parties.config import Dataset, NodeConfig
from parties.errors import JobError
from parties.jobstore import make_engine

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["check_scores_table", "write_scores_table"]


def _has_table(url: str, name: str) -> bool:
    import sqlalchemy as sa

    engine = make_engine(url)
    try:
        return sa.inspect(engine).has_table(name)
    finally:
        engine.dispose()


def check_scores_table(config: NodeConfig, home: Path, name: str) -> None:
    """Refuse a scores table name that would replace anything but an earlier job's scores.

    Raises:
        JobError: the name is a dataset or a table that no job wrote.
    """
    import sqlalchemy as sa

    held = config.datasets.get(name)
    if held is not None:
        if not held.written_by:
            raise JobError(f"dataset {name!r} exists and holds no earlier scores")
        return
    try:
        exists = _has_table(config.database.outputs_url(home), name)
    except sa.exc.SQLAlchemyError as exc:
        raise JobError(f"the node's database cannot be read ({type(exc).__name__})") from None
    if exists:
        raise JobError(f"a table {name!r} already exists in the node's database")


def write_scores_table(
    config: NodeConfig, home: Path, name: str, scores: pd.DataFrame, *, subject: str, job_id: str
) -> Dataset:
    """Write ``scores`` as table ``name`` in one transaction and register it; returns the dataset.

    Raises:
        JobError: the database refused the write (nothing is registered; the table is unchanged).
    """
    import sqlalchemy as sa
    from pandas.errors import DatabaseError

    url = config.database.outputs_url(home)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:  # DROP, CREATE and INSERT commit together or not at all
            scores.to_sql(name, connection, if_exists="replace", index=False, chunksize=10_000)
    except (sa.exc.SQLAlchemyError, DatabaseError, ValueError) as exc:  # never the rows: no detail
        cause = type(exc.__cause__ or exc).__name__
        raise JobError(f"the scores table could not be written ({cause})") from None
    finally:
        engine.dispose()
    dataset = Dataset(sql_url=url, sql_table=name, subject_column=subject, written_by=job_id)
    config.datasets[name] = dataset
    config.save(home)
    return dataset
