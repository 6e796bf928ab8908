"""The job handshake between a brand node and a partner node, in process (real stores, ledgers
and signed envelopes; the transport is the in-memory twin of HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from parties.envelope import seal
from parties.errors import (
    BadEnvelope,
    JobError,
    JobStateError,
    NotApproved,
    ReplayedMessage,
    UnknownNode,
)
from parties.identity import NodeIdentity
from parties.jobs import JobKind, JobSpec
from parties.jobstore import JobRecord, JobState
from parties.node import InMemoryPeerTransport, PecNode
from tests.parties.node_helpers import (
    BRAND,
    OVERLAP_SPEC,
    PARTNER,
    consent_rows,
    make_homes,
    open_ledger,
)

pytestmark = pytest.mark.integration


@dataclass
class Pair:
    brand: PecNode
    partner: PecNode
    transport: InMemoryPeerTransport


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    homes = make_homes(tmp_path)
    transport = InMemoryPeerTransport()
    with open_ledger(homes.brand) as bl, open_ledger(homes.partner) as pl:
        brand = PecNode.open(homes.brand, bl, transport=transport)
        partner = PecNode.open(homes.partner, pl, transport=transport)
        transport.nodes = {"http://127.0.0.1:8701": partner, "http://127.0.0.1:8700": brand}
        try:
            yield Pair(brand, partner, transport)
        finally:
            brand.store.close()
            partner.store.close()


def test_an_overlap_job_is_approved_with_both_cohorts_on_record(pair: Pair) -> None:
    job = pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC))

    assert job.state is JobState.APPROVED, job.reason
    theirs = pair.partner.job(job.job_id)
    assert theirs.state is JobState.APPROVED and theirs.side == "partner" and theirs.peer == BRAND
    for node in (pair.brand, pair.partner):
        manifest = node.manifest(job.job_id)
        brand_cohort, partner_cohort = manifest["cohorts"]["brand"], manifest["cohorts"]["partner"]
        assert (brand_cohort["input_rows"], brand_cohort["rows_without_consent"]) == (30, 10)
        assert (partner_cohort["input_rows"], partner_cohort["rows_without_consent"]) == (50, 10)
        assert brand_cohort["tree_head"]["tree_size"] == 30
        assert manifest["decisions"][0]["approved"] is True
        assert [m["kind"] for m in manifest["messages"]] == ["proposal", "decision"]
    # both sides saw the same two envelopes
    ours, theirs_ = (
        sorted(m["sha256"] for m in node.manifest(job.job_id)["messages"])
        for node in (pair.brand, pair.partner)
    )
    assert ours == theirs_
    # each side's input is exactly its consented rows; nothing of it crossed
    assert len((pair.brand.job_dir(job.job_id) / "input.csv").read_text().splitlines()) == 31
    assert len((pair.partner.job_dir(job.job_id) / "input.csv").read_text().splitlines()) == 51


def test_a_job_outside_the_policy_is_rejected_with_every_reason(pair: Pair) -> None:
    spec = OVERLAP_SPEC | {"purpose": "marketing.lead_scoring", "outputs": ["count", "per_key"]}
    pair.partner.policy.grants[0].outputs = ["count"]

    job = pair.brand.submit(JobSpec.model_validate(spec))

    assert job.state is JobState.REJECTED
    assert "purpose 'marketing.lead_scoring' is not allowed" in job.reason
    assert "output 'per_key' is not allowed" in job.reason
    assert pair.partner.job(job.job_id).state is JobState.REJECTED
    with pytest.raises(JobStateError):
        pair.brand.result(job.job_id)


def test_a_small_consent_cohort_is_rejected(pair: Pair) -> None:
    pair.partner.policy.grants[0].min_cohort = 40

    job = pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC))

    assert job.state is JobState.REJECTED
    assert job.reason.endswith("brand cohort 30 is below the minimum 40")


def test_an_unreachable_partner_fails_the_job_with_a_reason(pair: Pair) -> None:
    pair.transport.nodes.clear()

    job = pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC))

    assert job.state is JobState.FAILED and "did not answer" in job.reason


def test_a_replayed_proposal_is_refused(pair: Pair) -> None:
    sent: list[bytes] = []
    real_send = pair.transport.send
    pair.transport.send = lambda address, env: sent.append(env) or real_send(address, env)  # type: ignore[method-assign]
    job = pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC))

    with pytest.raises(ReplayedMessage):
        pair.partner.receive(sent[0])
    assert pair.partner.job(job.job_id).state is JobState.APPROVED


def test_an_unknown_node_is_refused(pair: Pair, tmp_path: Path) -> None:
    stranger = NodeIdentity.generate()
    envelope = seal(stranger, recipient=pair.partner.identity.fingerprint, job_id="0" * 32,
                    seq=0, kind="proposal", payload=b"{}")  # fmt: skip

    with pytest.raises(UnknownNode):
        pair.partner.receive(envelope)
    assert pair.partner.jobs() == []


def test_messages_for_jobs_not_approved_or_not_addressed_here_are_refused(pair: Pair) -> None:
    job = pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC))
    me = pair.brand.identity
    to_partner = pair.partner.identity.fingerprint

    # a job-state message for a job the partner never saw
    unknown = seal(me, recipient=to_partner, job_id="f" * 32, seq=0, kind="job_state",
                   payload=b'{"state": "failed"}')  # fmt: skip
    with pytest.raises(NotApproved):
        pair.partner.receive(unknown)
    from_partner = seal(pair.partner.identity, recipient=me.fingerprint, job_id="e" * 32, seq=0,
                        kind="proposal", payload=b"{}")  # fmt: skip
    with pytest.raises(NotApproved):
        pair.brand.receive(from_partner)  # a brand takes no proposals
    # addressed to another node
    elsewhere = seal(me, recipient="0" * 64, job_id=job.job_id, seq=5, kind="job_state",
                     payload=b"{}")  # fmt: skip
    with pytest.raises(BadEnvelope):
        pair.partner.receive(elsewhere)
    # tampered payload
    good = seal(me, recipient=to_partner, job_id=job.job_id, seq=6, kind="job_state",
                payload=b'{"state": "failed", "reason": "x"}')  # fmt: skip
    with pytest.raises(BadEnvelope):
        pair.partner.receive(good[:-3] + b"zz}")


def test_the_brand_reports_a_failure_to_the_partner(pair: Pair) -> None:
    job = pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC))
    pair.brand.store.update(job.job_id, state=JobState.FAILED, reason="the run stopped")

    pair.brand.notify(job.job_id, JobState.FAILED, "the run stopped")

    theirs = pair.partner.job(job.job_id)
    assert theirs.state is JobState.FAILED and theirs.reason == f"{BRAND} reported: the run stopped"


def test_only_a_brand_submits_and_only_to_a_partner_peer(pair: Pair) -> None:
    with pytest.raises(JobError):
        pair.partner.submit(JobSpec.model_validate(OVERLAP_SPEC))
    with pytest.raises(JobError):
        pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC | {"partner": "nobody"}))


def test_nothing_sent_names_a_subject_a_phone_or_a_path(pair: Pair) -> None:
    sent: list[bytes] = []
    real_send = pair.transport.send
    pair.transport.send = lambda address, env: sent.append(env) or real_send(address, env)  # type: ignore[method-assign]

    job = pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC))

    manifest = json.dumps(pair.partner.manifest(job.job_id)).encode()
    for data in (*sent, manifest):
        for needle in (b"1380000", b'"b2"', b"leads.csv", str(pair.brand.home).encode()):
            assert needle not in data


def test_a_restarted_node_fails_its_unfinished_jobs_and_tells_the_peer(
    pair: Pair, tmp_path: Path
) -> None:
    running = pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC))
    pair.brand.store.update(running.job_id, state=JobState.RUNNING)
    outside = OVERLAP_SPEC | {"purpose": "marketing.lookalike"}
    rejected = pair.brand.submit(JobSpec.model_validate(outside))
    pair.brand.store.close()

    # the same home and database, opened again as after a crash
    with open_ledger(pair.brand.home) as ledger:
        again = PecNode.open(pair.brand.home, ledger, transport=pair.transport)
        settled = again.recover()
        job = again.job(running.job_id)
        again.store.close()

    assert settled == [running.job_id]
    assert job.state is JobState.FAILED and "restarted" in job.reason and job.outputs == {}
    assert pair.partner.job(running.job_id).state is JobState.FAILED
    assert pair.partner.job(rejected.job_id).state is JobState.REJECTED


def test_a_manifest_verifies_against_each_ledger_until_the_past_is_rewritten(pair: Pair) -> None:
    job = pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC))
    for node in (pair.brand, pair.partner):
        report = node.verify_manifest(job.job_id)
        assert report["ok"], report
        sides = {c["side"] for c in report["checks"]}
        assert sides == ({"brand"} if node is pair.brand else {"partner"})
    # the ledger grows after the cut: still verified, consistent, the same cut at its time
    later = datetime.now(UTC).isoformat()
    pair.brand.ledger.record(
        [
            row | {"occurred_at": later}
            for row in consent_rows(["b35"], PARTNER, "analytics.overlap")
        ]
    )
    assert pair.brand.verify_manifest(job.job_id)["ok"]
    # an event dated before the cut but recorded after it changes the cohort at that time
    pair.brand.ledger.record(
        [
            row | {"event_id": "ev-backdated"}
            for row in consent_rows(["b36"], PARTNER, "analytics.overlap")
        ]
    )
    report = pair.brand.verify_manifest(job.job_id)
    assert not report["ok"]
    check = report["checks"][0]
    assert check["signature"] and check["head_in_ledger"] and check["consistent_with_latest"]
    assert check["cohort_reproduced"] is False


def test_a_scores_table_may_not_replace_a_dataset_that_holds_other_data(pair: Pair) -> None:
    spec = JobSpec.model_validate(
        {"kind": "lead_scoring", "purpose": "marketing.lead_scoring", "partner": PARTNER,
         "brand_dataset": "leads", "partner_dataset": "tags", "labels": ["y"],
         "keys": [{"brand": "phone", "partner": "mobile", "kind": "phone"}],
         "outputs": ["scores"], "scores_table": "leads"}
    )  # fmt: skip
    with pytest.raises(JobError, match="holds no earlier scores"):
        pair.brand.submit(spec)
    assert pair.brand.jobs() == []


def test_a_partner_caps_the_jobs_a_brand_runs_per_day(pair: Pair) -> None:
    pair.partner.policy.grants[0].max_jobs_per_day = 2
    spec = JobSpec.model_validate(OVERLAP_SPEC)
    first, second, third = (pair.brand.submit(spec) for _ in range(3))
    assert first.state is second.state is JobState.APPROVED
    assert third.state is JobState.REJECTED
    assert "already had 2 jobs approved in the last 24 hours" in third.reason
    later = datetime.now(UTC) + timedelta(hours=25)  # a day on, the earlier jobs no longer count
    pair.partner.clock = lambda: later
    assert pair.brand.submit(spec).state is JobState.APPROVED


def test_aggregate_jobs_spend_the_brands_epsilon_budget(pair: Pair) -> None:
    grant = pair.partner.policy.grants[0]
    grant.job_kinds.append(JobKind.AGGREGATE)
    grant.outputs.append("aggregate:tier")
    grant.max_epsilon, grant.epsilon_budget = 1.0, 1.0

    def aggregate(epsilon: float | None) -> JobRecord:
        spec = OVERLAP_SPEC | {"kind": "aggregate", "outputs": ["aggregate:tier"]}
        return pair.brand.submit(JobSpec.model_validate(spec | {"epsilon": epsilon}))

    assert aggregate(0.6).state is JobState.APPROVED
    refused = aggregate(0.6)
    assert refused.state is JobState.REJECTED
    assert "exceeds what is left of the policy's budget (0.4 of 1.0)" in refused.reason
    assert aggregate(0.4).state is JobState.APPROVED  # what was left
    exact = aggregate(None)
    assert exact.state is JobState.REJECTED and "requires noise" in exact.reason
    assert pair.brand.submit(JobSpec.model_validate(OVERLAP_SPEC)).state is JobState.APPROVED
