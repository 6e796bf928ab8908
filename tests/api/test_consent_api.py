from __future__ import annotations

import csv
import io

import pytest
from api_helpers import auth
from fastapi.testclient import TestClient
from ledger_helpers import event

from consent.ledger import ConsentLedger, verify_document
from consent.merkle import verify_consistency, verify_inclusion

pytestmark = pytest.mark.integration


def _events(*rows: dict[str, object]) -> dict[str, object]:
    return {"events": list(rows)}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/consent/events", _events(event(1))),
        ("get", "/consent/verify", None),
        ("post", "/consent/history", {"subject_id": "alice"}),
        ("get", "/consent/tree-head", None),
    ],
)
def test_missing_or_unknown_token_is_401(
    client: TestClient, method: str, path: str, body: object
) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (path, headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("compliance", "post", "/consent/events", _events(event(1))),
        ("compliance", "post", "/consent/withdraw", {}),
        ("ingest", "get", "/consent/verify", None),
        ("ingest", "post", "/consent/history", {"subject_id": "alice"}),
        ("ingest", "post", "/consent/cohort", {"purpose": "marketing.lookalike"}),
        ("ingest", "post", "/consent/projections/rebuild", None),
        ("compliance", "post", "/consent/projections/rebuild", None),
    ],
)
def test_wrong_role_is_403(
    client: TestClient, role: str, method: str, path: str, body: object
) -> None:
    r = client.request(method, path, json=body, headers=auth(role))
    assert r.status_code == 403, r.text


def test_malformed_bodies_are_422_naming_the_field(client: TestClient) -> None:
    missing = event(1)
    del missing["notice_id"]
    r1 = client.post("/consent/events", json=_events(missing), headers=auth("ingest"))
    r2 = client.post(
        "/consent/events",
        json=_events(event(1), event(2, purpose="marketing.spam")),
        headers=auth("ingest"),
    )
    r3 = client.post(
        "/consent/check",
        json={"subject_id": "a", "purpose": "marketing.lookalike", "at": "noon"},
        headers=auth("ingest"),
    )

    assert r1.status_code == 422 and r1.json()["detail"][0]["loc"][-1] == "notice_id"
    assert r2.status_code == 422 and r2.json()["detail"][0]["loc"] == [
        "body",
        "events",
        1,
        "purpose",
    ]
    assert r3.status_code == 422 and r3.json()["detail"][0]["loc"][-1] == "at"
    # all-or-nothing: the valid first event of r2 was not recorded
    v = client.get("/consent/verify", headers=auth("compliance")).json()
    assert v["entries_checked"] == 0


def test_record_check_withdraw_audit(client: TestClient, ledger: ConsentLedger) -> None:
    ing, comp = auth("ingest"), auth("compliance")
    rows = [event(i, subject=f"s{i}", recipient="ins-co") for i in range(6)]
    r = client.post("/consent/events", json=_events(*rows), headers=ing)
    assert r.status_code == 200 and r.json()["appended"] == 6
    assert client.post("/consent/events", json=_events(*rows), headers=ing).json()["skipped"] == 6

    ask = {"subject_id": "s2", "purpose": "marketing.lead_scoring", "recipient": "ins-co"}
    assert client.post("/consent/check", json=ask, headers=ing).json()["allowed"] is True
    w = client.post(
        "/consent/withdraw",
        json={
            "event_id": "w-1",
            "subject_id": "s2",
            "purpose": "marketing.lead_scoring",
            "recipient": "ins-co",
            "notice_id": "privacy-notice",
            "notice_version": "3",
            "method": "app",
            "jurisdiction": "CN",
        },
        headers=ing,
    )
    assert w.status_code == 200, w.text
    decision = client.post("/consent/check", json=ask, headers=ing).json()
    assert decision == {"allowed": False, "reasons": ["withdrawn"], "state": "withdrawn"}

    hist = client.post("/consent/history", json={"subject_id": "s2"}, headers=comp).json()
    assert [h["action"] for h in hist] == ["grant", "withdraw"]
    assert (
        client.post("/consent/history", json={"subject_id": "zz"}, headers=comp).status_code == 404
    )
    rec = client.post("/consent/receipt", json={"subject_id": "s2"}, headers=comp).json()
    assert verify_document(rec, ledger.keys.public_key)

    cohort_q = {"purpose": "marketing.lead_scoring", "recipient": "ins-co"}
    snap = client.post("/consent/cohort", json=cohort_q, headers=comp).json()
    assert snap["eligible"] == 5 and snap["excluded"]["withdrawn"] == 1
    assert verify_document(snap, ledger.keys.public_key)
    export = client.post("/consent/cohort/export", json=cohort_q, headers=comp)
    assert export.status_code == 200
    keys = [row[0] for row in csv.reader(io.StringIO(export.text))]
    assert keys[0] == "subject_key" and len(keys) == 6
    assert export.headers["x-pec-subjects-sha256"] == snap["subjects_sha256"]

    head = client.get("/consent/tree-head", headers=ing).json()["tree_head"]
    assert head["tree_size"] == 7
    inc = client.get("/consent/proofs/inclusion", params={"index": 3}, headers=comp).json()
    assert verify_inclusion(
        bytes.fromhex(inc["leaf_hash"]),
        3,
        7,
        [bytes.fromhex(h) for h in inc["audit_path"]],
        bytes.fromhex(head["root_hash"]),
    )
    cons = client.get("/consent/proofs/consistency", params={"old_size": 6}, headers=comp).json()
    assert verify_consistency(
        6,
        7,
        bytes.fromhex(cons["old_tree_head"]["root_hash"]),
        bytes.fromhex(head["root_hash"]),
        [bytes.fromhex(h) for h in cons["proof"]],
    )
    bad = client.get("/consent/proofs/inclusion", params={"index": 70}, headers=comp)
    assert bad.status_code == 422
    assert client.get("/consent/verify", headers=comp).json()["ok"] is True
    assert client.post("/consent/projections/rebuild", headers=auth("admin")).json() == {
        "replayed": 7
    }


def test_health_needs_no_token(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_recipient_registry_feeds_receipts(client: TestClient) -> None:
    body = {
        "name": "Ping An Insurance",
        "contact": "dpo@example.com",
        "purposes": ["marketing.lead_scoring"],
        "processing_method": "vertical federated scoring; no raw data leaves the brand",
        "data_categories": ["identifier.phone", "income_level"],
    }
    assert (
        client.put("/consent/recipients/ins-co", json=body, headers=auth("ingest")).status_code
        == 403
    )
    r = client.put("/consent/recipients/ins-co", json=body, headers=auth("admin"))
    bad = client.put(
        "/consent/recipients/ins-co",
        json={**body, "purposes": ["marketing.spam"]},
        headers=auth("admin"),
    )
    client.post(
        "/consent/events", json=_events(event(1, recipient="ins-co")), headers=auth("ingest")
    )
    rec = client.post("/consent/receipt", json={"subject_id": "alice"}, headers=auth("compliance"))

    assert r.status_code == 200 and r.json()["recipient_id"] == "ins-co"
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "purposes"
    listed = client.get("/consent/recipients", headers=auth("compliance")).json()
    assert [x["recipient_id"] for x in listed] == ["ins-co"]
    details = rec.json()["consent_records"][0]["recipient_third_party_details"]
    assert details["name"] == "Ping An Insurance"
