"""Job routes of a node's API, and the authorization matrix over every endpoint and role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from api_helpers import TOKENS, auth
from fastapi.testclient import TestClient

from api import create_app
from parties.envelope import seal
from parties.identity import NodeIdentity
from parties.node import InMemoryPeerTransport, PecNode
from tests.parties.node_helpers import OVERLAP_SPEC, make_homes, open_ledger

pytestmark = pytest.mark.integration

PUBLIC = frozenset({"anyone"})
# Who may call what, besides admin (who may call everything). Every route of the app must be
# listed: a new endpoint without an entry here fails the matrix test.
MATRIX: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/health"): PUBLIC,
    ("POST", "/peer/envelopes"): PUBLIC,  # signed by a peer's key instead of a bearer token
    ("POST", "/consent/events"): frozenset({"ingest"}),
    ("POST", "/consent/withdraw"): frozenset({"ingest"}),
    ("POST", "/consent/contacts"): frozenset({"ingest"}),
    ("POST", "/consent/check"): frozenset({"ingest", "compliance"}),
    ("POST", "/consent/contact-check"): frozenset({"ingest", "compliance"}),
    ("GET", "/consent/tree-head"): frozenset({"ingest", "compliance"}),
    ("GET", "/consent/recipients"): frozenset({"ingest", "compliance"}),
    ("POST", "/consent/history"): frozenset({"compliance"}),
    ("POST", "/consent/receipt"): frozenset({"compliance"}),
    ("POST", "/consent/cohort"): frozenset({"compliance"}),
    ("POST", "/consent/cohort/export"): frozenset({"compliance"}),
    ("GET", "/consent/proofs/inclusion"): frozenset({"compliance"}),
    ("GET", "/consent/proofs/consistency"): frozenset({"compliance"}),
    ("GET", "/consent/verify"): frozenset({"compliance"}),
    ("PUT", "/consent/recipients/{recipient_id}"): frozenset(),
    ("POST", "/consent/projections/rebuild"): frozenset(),
    ("POST", "/jobs"): frozenset({"modeler"}),
    ("GET", "/jobs"): frozenset({"modeler", "compliance"}),
    ("GET", "/jobs/{job_id}"): frozenset({"modeler", "compliance"}),
    ("GET", "/jobs/{job_id}/result"): frozenset({"modeler"}),
    ("GET", "/jobs/{job_id}/manifest"): frozenset({"compliance"}),
    ("GET", "/jobs/{job_id}/manifest/verify"): frozenset({"compliance"}),
}
ROLES = sorted(r.value for r in TOKENS.values())


@dataclass
class Nodes:
    brand: TestClient
    partner: TestClient
    partner_node: PecNode


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    homes = make_homes(tmp_path)
    transport = InMemoryPeerTransport()
    with open_ledger(homes.brand) as bl, open_ledger(homes.partner) as pl:
        brand = PecNode.open(homes.brand, bl, transport=transport)
        partner = PecNode.open(homes.partner, pl, transport=transport)
        transport.nodes["http://127.0.0.1:8701"] = partner
        try:
            with (
                TestClient(create_app(bl, tokens=TOKENS, node=brand)) as bc,
                TestClient(create_app(pl, tokens=TOKENS, node=partner)) as pc,
            ):
                yield Nodes(bc, pc, partner)
        finally:
            brand.store.close()
            partner.store.close()


def _concrete(path: str) -> str:
    return path.replace("{job_id}", "0" * 32).replace("{recipient_id}", "ins-co")


def test_every_route_is_in_the_matrix(nodes: Nodes) -> None:
    paths = nodes.brand.get("/openapi.json").json()["paths"]
    routes = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert routes == set(MATRIX)


@pytest.mark.parametrize(("method", "path"), sorted(MATRIX))
def test_authorization_matrix(nodes: Nodes, method: str, path: str) -> None:
    allowed = MATRIX[(method, path)]
    url = _concrete(path)
    anonymous = nodes.brand.request(method, url)
    if allowed is PUBLIC:
        assert anonymous.status_code not in (401, 403), anonymous.text
        return
    assert anonymous.status_code == 401
    for role in ROLES:
        r = nodes.brand.request(method, url, headers=auth(role))
        if role == "admin" or role in allowed:
            assert r.status_code not in (401, 403), (role, r.text)
        else:
            assert r.status_code == 403, (role, r.text)
        assert r.status_code < 500, (role, r.text)


def test_submit_status_result_and_manifest(nodes: Nodes) -> None:
    r = nodes.brand.post("/jobs", json=OVERLAP_SPEC, headers=auth("modeler"))

    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "approved" and job["side"] == "brand" and job["reason"] == ""
    status = nodes.brand.get(f"/jobs/{job['job_id']}", headers=auth("compliance")).json()
    assert status["state"] == "approved"
    listed = nodes.partner.get("/jobs", headers=auth("compliance")).json()
    assert [j["job_id"] for j in listed] == [job["job_id"]]
    # no result before the job completed, and never a partial one
    r = nodes.brand.get(f"/jobs/{job['job_id']}/result", headers=auth("modeler"))
    assert r.status_code == 409 and r.json()["code"] == "job_state"
    manifest = nodes.partner.get(f"/jobs/{job['job_id']}/manifest", headers=auth("compliance"))
    assert set(manifest.json()["cohorts"]) == {"brand", "partner"}


def test_a_rejected_job_reads_with_its_reason(nodes: Nodes) -> None:
    spec = OVERLAP_SPEC | {"purpose": "marketing.lookalike"}

    job = nodes.brand.post("/jobs", json=spec, headers=auth("modeler")).json()

    assert job["state"] == "rejected"
    assert "purpose 'marketing.lookalike' is not allowed" in job["reason"]


def test_bad_specs_unknown_jobs_and_wrong_nodes(nodes: Nodes) -> None:
    bad = nodes.brand.post("/jobs", json=OVERLAP_SPEC | {"kind": "x"}, headers=auth("modeler"))
    assert bad.status_code == 422
    missing = nodes.brand.get("/jobs/" + "1" * 32, headers=auth("modeler"))
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_job"
    on_partner = nodes.partner.post("/jobs", json=OVERLAP_SPEC, headers=auth("modeler"))
    assert on_partner.status_code == 400


def test_peer_envelopes_from_strangers_replays_and_garbage(nodes: Nodes) -> None:
    partner_fp = nodes.partner_node.identity.fingerprint
    stranger = seal(NodeIdentity.generate(), recipient=partner_fp, job_id="0" * 32, seq=0,
                    kind="proposal", payload=b"{}")  # fmt: skip
    r = nodes.partner.post("/peer/envelopes", content=stranger)
    assert r.status_code == 403 and r.json()["code"] == "unknown_node"
    r = nodes.partner.post("/peer/envelopes", content=b"not an envelope")
    assert r.status_code == 400 and r.json()["code"] == "bad_envelope"


def test_an_api_without_a_node_says_so(ledger: object) -> None:
    with TestClient(create_app(ledger, tokens=TOKENS)) as client:  # type: ignore[arg-type]
        r = client.get("/jobs", headers=auth("modeler"))
    assert r.status_code == 503 and r.json()["code"] == "node_not_configured"
