"""Fixtures of the API tests: the real app on a real SQLite ledger, with one token per role."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parents[1] / "consent"))

from api_helpers import TOKENS

from api import create_app
from consent.keys import LedgerKeys
from consent.ledger import ConsentLedger
from consent.storage import SqlLedgerStore


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[ConsentLedger]:
    led = ConsentLedger(
        SqlLedgerStore.open(f"sqlite:///{tmp_path / 'api.sqlite3'}"), LedgerKeys.generate()
    )
    try:
        yield led
    finally:
        led.close()


@pytest.fixture
def client(ledger: ConsentLedger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger, tokens=TOKENS)) as c:
        yield c
