"""The Alembic migration creates exactly the tables the code defines, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from consent.storage import make_engine, migrate
from consent.tables import metadata

pytestmark = pytest.mark.integration


def test_migration_matches_the_table_definitions(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate(engine)
        migrate(engine)  # idempotent
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": "consent_alembic_version"}
            )
            diff = compare_metadata(ctx, metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert diff == []
    assert {"consent_entries", "consent_nodes", "consent_alembic_version"} <= tables
