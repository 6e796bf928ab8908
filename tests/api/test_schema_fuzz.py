"""Schemathesis fuzzes every route of the real app (real ledger, a brand node proposing to a real
partner node in process, admin token): no 500s."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from api_helpers import TOKENS, auth
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from api import create_app
from consent.keys import LedgerKeys
from consent.ledger import ConsentLedger
from consent.storage import SqlLedgerStore
from parties.node import InMemoryPeerTransport, PecNode
from tests.parties.node_helpers import make_homes

pytestmark = pytest.mark.integration


def _app(home: Path) -> object:
    ledger = ConsentLedger(
        SqlLedgerStore.open(f"sqlite:///{home / 'fuzz.sqlite3'}"), LedgerKeys.generate()
    )
    homes = make_homes(home / "nodes")
    transport = InMemoryPeerTransport()
    partner_ledger = ConsentLedger.open(homes.partner)
    transport.nodes["http://127.0.0.1:8701"] = PecNode.open(
        homes.partner, partner_ledger, transport=transport
    )
    brand = PecNode.open(homes.brand, ConsentLedger.open(homes.brand), transport=transport)
    return create_app(ledger, tokens=TOKENS, node=brand)


_HOME = Path(tempfile.mkdtemp(prefix="pec-fuzz-"))
atexit.register(shutil.rmtree, _HOME, True)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app(_HOME))


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_produces_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers=auth("admin"), checks=[not_a_server_error, response_schema_conformance]
    )
