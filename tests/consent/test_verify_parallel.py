"""The parallel verifier reports exactly what the serial one does (tiny chunks, two workers)."""

from __future__ import annotations

import json

import pytest
from ledger_helpers import event
from sqlalchemy import text

from consent.ledger import ConsentLedger

pytestmark = pytest.mark.integration

TAMPER = {
    "intact": None,
    "column": "UPDATE consent_entries SET purpose = 'marketing.lookalike' WHERE seq = 13",
    "delete": "DELETE FROM consent_entries WHERE seq = 9",
    "truncate": "DELETE FROM consent_entries WHERE seq >= 30",
    "forged head": "UPDATE consent_tree_heads SET root_hash = tree_heads_root WHERE tree_size = 20",
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_parallel_equals_serial(sqlite_ledger: ConsentLedger, case: str) -> None:
    ledger = sqlite_ledger
    for start in (0, 7, 20, 26):
        ledger.record(
            [event(i, subject=f"s{i}") for i in range(start, {0: 7, 7: 20, 20: 26, 26: 37}[start])]
        )
    sql = TAMPER[case]
    if sql is not None:
        sql = sql.replace("tree_heads_root", "x'" + "00" * 32 + "'")
        with ledger.store.engine.begin() as conn:
            conn.execute(text(sql))

    serial = ledger.verify()
    parallel = ledger.verify(workers=2, chunk_level=2)

    assert json.dumps(parallel.to_dict(), sort_keys=True) == json.dumps(
        serial.to_dict(), sort_keys=True
    )
    assert serial.ok == (case == "intact")
