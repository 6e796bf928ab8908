"""Fixtures of the consent tests: ledgers on SQLite and on a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ledger_helpers import Clock

from consent.keys import LedgerKeys
from consent.ledger import ConsentLedger
from consent.storage import SqlLedgerStore

PG_ADMIN_URL = os.environ.get("PEC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_admin() -> str:
    if not pg_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    return PG_ADMIN_URL


def _create_pg_db(admin_url: str) -> tuple[str, Callable[[], None]]:
    import psycopg

    name = f"pec_consent_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


@pytest.fixture
def pg_url(pg_admin: str) -> Iterator[str]:
    url, drop = _create_pg_db(pg_admin)
    try:
        yield url
    finally:
        drop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        admin = request.getfixturevalue("pg_admin")
        url, drop = _create_pg_db(admin)
        try:
            yield url
        finally:
            drop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys() -> LedgerKeys:
    return LedgerKeys.generate()


@pytest.fixture
def ledger(db_url: str, keys: LedgerKeys, clock: Clock) -> Iterator[ConsentLedger]:
    store = SqlLedgerStore.open(db_url)
    led = ConsentLedger(store, keys, clock)
    try:
        yield led
    finally:
        led.close()


@pytest.fixture
def sqlite_ledger(tmp_path: Path, keys: LedgerKeys, clock: Clock) -> Iterator[ConsentLedger]:
    store = SqlLedgerStore.open(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    led = ConsentLedger(store, keys, clock)
    try:
        yield led
    finally:
        led.close()
