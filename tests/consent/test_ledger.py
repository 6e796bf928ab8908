"""Contract tests of the ledger, run against SQLite and PostgreSQL (the ``db_url`` fixture)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ledger_helpers import Clock, event
from sqlalchemy import delete, insert, select, text, update

from consent.errors import ConsentInputError, DuplicateEventError, ProofError, UnknownSubjectError
from consent.keys import LedgerKeys
from consent.ledger import ConsentLedger, verify_document
from consent.merkle import verify_consistency, verify_inclusion
from consent.tables import entries, nodes, tree_heads
from consent.tree_head import SignedTreeHead

pytestmark = pytest.mark.integration


def _grants(n: int, start: int = 0) -> list[dict[str, object]]:
    return [event(i, subject=f"s{i}") for i in range(start, start + n)]


def test_append_signs_a_tree_head_and_is_idempotent(ledger: ConsentLedger) -> None:
    first = ledger.record(_grants(10))
    assert (first.appended, first.skipped) == (10, 0)
    assert first.tree_head is not None and first.tree_head.tree_size == 10
    assert first.tree_head.verify(ledger.keys.public_key)

    again = ledger.record(_grants(10))

    assert (again.appended, again.skipped, again.tree_head) == (0, 10, None)
    assert ledger.store.size() == 10
    assert ledger.tree_head() == first.tree_head


def test_bad_event_rejects_the_whole_batch(ledger: ConsentLedger) -> None:
    rows = _grants(5)
    rows[3]["purpose"] = "unknown.purpose"

    with pytest.raises(ConsentInputError) as info:
        ledger.record(rows)

    assert (info.value.row, info.value.field) == (4, "purpose")
    assert ledger.store.size() == 0
    assert ledger.store.count_entries() == 0


def test_reused_event_id_with_other_content_is_rejected(ledger: ConsentLedger) -> None:
    ledger.record(_grants(3))
    changed = _grants(3)
    changed[2]["purpose"] = "marketing.lookalike"

    with pytest.raises(DuplicateEventError) as info:
        ledger.record(changed)

    assert (info.value.row, info.value.field) == (3, "event_id")
    assert ledger.store.size() == 3


def test_inclusion_and_consistency_proofs_verify(ledger: ConsentLedger) -> None:
    ledger.record(_grants(5))
    ledger.record(_grants(8, start=5))
    head = ledger.tree_head()
    assert head is not None and head.tree_size == 13

    for i in (0, 4, 12):
        proof = ledger.inclusion_proof(i)
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        assert verify_inclusion(bytes.fromhex(proof["leaf_hash"]), i, 13, path, head.root_hash)
    old = ledger.inclusion_proof(2, tree_size=5)
    assert old["tree_size"] == 5

    cons = ledger.consistency_proof(5)
    old_head = SignedTreeHead.from_dict(cons["old_tree_head"])
    assert old_head.verify(ledger.keys.public_key)
    assert verify_consistency(
        5, 13, old_head.root_hash, head.root_hash, [bytes.fromhex(h) for h in cons["proof"]]
    )
    with pytest.raises(ProofError):
        ledger.inclusion_proof(13)
    with pytest.raises(ProofError):
        ledger.consistency_proof(7)  # no signed head of size 7


def test_verify_passes_on_an_intact_ledger(ledger: ConsentLedger) -> None:
    assert ledger.verify().ok  # empty
    ledger.record(_grants(7))
    ledger.record(_grants(9, start=7))

    report = ledger.verify()

    assert report.ok, report.to_dict()
    assert (report.entries_checked, report.tree_heads_checked) == (16, 2)


def test_verify_rejects_another_nodes_key(ledger: ConsentLedger) -> None:
    ledger.record(_grants(3))
    report = ledger.verify(LedgerKeys.generate().public_key)
    assert not report.ok and "signature" in (report.error.reason if report.error else "")


# -- tampering: each change to a past row is detected and named -------------------------------


def _fill(ledger: ConsentLedger) -> None:
    ledger.record(_grants(6))
    ledger.record(_grants(6, start=6))


def _tampered(ledger: ConsentLedger, sql: str, **params: object) -> tuple[int | None, str]:
    if ledger.store.size() == 0:
        _fill(ledger)
    with ledger.store.engine.begin() as conn:
        conn.execute(text(sql), params)
    report = ledger.verify()
    assert not report.ok
    assert report.error is not None
    return report.first_bad_entry, report.error.reason


def test_update_of_an_indexed_column_is_detected(ledger: ConsentLedger) -> None:
    entry, reason = _tampered(
        ledger, "UPDATE consent_entries SET purpose = 'marketing.lookalike' WHERE seq = 4"
    )
    assert entry == 4 and "purpose" in reason


def test_update_of_the_payload_is_detected(ledger: ConsentLedger) -> None:
    _fill(ledger)
    row = ledger.store.entry(7)
    assert row is not None
    body = json.loads(row.payload)
    body["event"]["action"] = "withdraw"
    new_payload = json.dumps(body, sort_keys=True, separators=(",", ":"))
    entry, _ = _tampered(
        ledger, "UPDATE consent_entries SET payload = :p WHERE seq = 7", p=new_payload
    )
    assert entry == 7


def test_rewrite_with_recomputed_hashes_is_still_detected(ledger: ConsentLedger) -> None:
    ledger.record(_grants(8))
    # An attacker rewrites entry 5 consistently: payload, columns, content hash and leaf hash.
    from consent.merkle import leaf_hash
    from consent.model import ConsentEvent

    row = ledger.store.entry(5)
    assert row is not None
    body = json.loads(row.payload)
    body["event"]["action"] = "refuse"
    ev = ConsentEvent.from_content(body["event"])
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    with ledger.store.engine.begin() as conn:
        conn.execute(
            update(entries)
            .where(entries.c.seq == 5)
            .values(payload=payload, action="refuse", content_hash=ev.content_hash())
        )
        conn.execute(
            update(nodes)
            .where(nodes.c.level == 0, nodes.c.idx == 5)
            .values(hash=leaf_hash(payload.encode()))
        )

    report = ledger.verify()

    assert not report.ok
    assert report.first_bad_entry == 4  # the stored subtree over entries 4..5 disagrees
    assert "4..5" in (report.error.reason if report.error else "")


def test_deletion_is_detected(ledger: ConsentLedger) -> None:
    entry, reason = _tampered(ledger, "DELETE FROM consent_entries WHERE seq = 3")
    assert entry == 3 and "missing" in reason


def test_deletion_of_the_last_entries_is_detected(ledger: ConsentLedger) -> None:
    entry, reason = _tampered(ledger, "DELETE FROM consent_entries WHERE seq >= 10")
    assert entry == 10 and "missing" in reason


def test_reordering_is_detected(ledger: ConsentLedger) -> None:
    ledger.record(_grants(6))
    with ledger.store.engine.begin() as conn:
        conn.execute(update(entries).where(entries.c.seq == 2).values(seq=-1))
        conn.execute(update(entries).where(entries.c.seq == 4).values(seq=2))
        conn.execute(update(entries).where(entries.c.seq == -1).values(seq=4))

    report = ledger.verify()

    assert not report.ok and report.first_bad_entry == 2
    assert report.error is not None and "reordered" in report.error.reason


def test_insertion_of_a_past_entry_is_detected(ledger: ConsentLedger) -> None:
    ledger.record(_grants(6))
    forged = ledger.store.entry(1)
    assert forged is not None
    with ledger.store.engine.begin() as conn:
        for seq in range(5, 2, -1):
            conn.execute(update(entries).where(entries.c.seq == seq).values(seq=seq + 1))
        cols = dict(forged.columns)
        cols.update(seq=3, event_id="forged-1")
        conn.execute(insert(entries).values(**cols))

    report = ledger.verify()

    assert not report.ok and report.first_bad_entry == 3


def test_appended_entry_without_a_signed_head_is_detected(ledger: ConsentLedger) -> None:
    ledger.record(_grants(4))
    with ledger.store.engine.begin() as conn:
        conn.execute(delete(tree_heads))
    report = ledger.verify()
    assert not report.ok and report.first_bad_entry == 0
    assert "not covered" in (report.error.reason if report.error else "")


def test_forged_tree_head_is_detected(ledger: ConsentLedger) -> None:
    ledger.record(_grants(4))
    with ledger.store.engine.begin() as conn:
        conn.execute(update(tree_heads).values(root_hash=b"\x00" * 32))
    report = ledger.verify()
    assert not report.ok and "signature" in (report.error.reason if report.error else "")


# -- projections, cohorts, checks, receipts ----------------------------------------------------


def test_projection_rebuild_matches_incremental(ledger: ConsentLedger) -> None:
    rows = _grants(6)
    rows += [
        event("w1", subject="s1", action="withdraw", occurred_at="2026-02-01T00:00:00Z"),
        # Arrives later but happened earlier: must not override the withdrawal.
        event("late", subject="s1", action="renew", occurred_at="2026-01-20T00:00:00Z"),
        event("r2", subject="s2", action="refuse", recipient="ins-co"),
        event(
            "p1",
            subject="s3",
            action="preference",
            purpose="",
            data_categories="",
            channel="sms",
            topics="offers",
        ),
    ]
    ledger.record(rows[:7])
    ledger.record(rows[7:])
    before = ledger.store.projection_dump()

    replayed = ledger.rebuild_projections()

    assert replayed == len(rows)
    assert ledger.store.projection_dump() == before
    assert not ledger.check("s1", "marketing.lead_scoring").allowed


def test_cohort_counts_exclusions_and_binds_the_tree_head(ledger: ConsentLedger) -> None:
    at = "2026-03-01T00:00:00Z"
    ledger.record(
        [
            event(1, subject="ok-1", recipient="ins-co"),
            event(2, subject="ok-2", recipient="ins-co", data_categories="identifier.phone"),
            event(3, subject="refused", recipient="ins-co", action="refuse"),
            event(4, subject="withdrawn", recipient="ins-co"),
            event(
                5,
                subject="withdrawn",
                recipient="ins-co",
                action="withdraw",
                occurred_at="2026-02-01T00:00:00Z",
            ),
            event(6, subject="expired", recipient="ins-co", valid_until="2026-02-01T00:00:00Z"),
            event(7, subject="first-party-only", recipient=""),
            event(8, subject="other-purpose", purpose="marketing.lookalike"),
            event(9, subject="future", recipient="ins-co", occurred_at="2026-04-01T00:00:00Z"),
        ]
    )
    got: list[str] = []
    snap = ledger.cohort(
        "marketing.lead_scoring",
        recipient="ins-co",
        data_categories=["identifier.phone"],
        at=datetime(2026, 3, 1, tzinfo=UTC),
        sink=got.append,
    )
    assert snap.eligible == 2 == len(got)
    assert got == sorted(ledger.subject_key(s) for s in ("ok-1", "ok-2"))
    assert snap.excluded["refused"] == 1
    assert snap.excluded["withdrawn"] == 1
    assert snap.excluded["expired"] == 1
    assert snap.excluded["other_recipient"] == 1
    assert snap.excluded["no_consent"] == 1  # other-purpose; "future" had not happened yet
    assert snap.tree_head == ledger.tree_head()

    narrower = ledger.cohort(
        "marketing.lead_scoring", "ins-co", ["income_level"], at=datetime.fromisoformat(at)
    )
    assert narrower.eligible == 1 and narrower.excluded["categories_not_covered"] == 1

    receipt = ledger.cohort_receipt(snap)
    assert verify_document(receipt, ledger.keys.public_key)
    receipt["eligible"] = 3
    assert not verify_document(receipt, ledger.keys.public_key)


def test_check_and_withdrawal_in_one_call(ledger: ConsentLedger) -> None:
    ledger.record([event(1, subject="bob", recipient="ins-co")])
    assert ledger.check("bob", "marketing.lead_scoring", "ins-co").allowed
    assert ledger.check("bob", "marketing.lead_scoring", "media-co").reasons == ("no_consent",)

    ledger.record(
        [
            event(
                2,
                subject="bob",
                recipient="ins-co",
                action="withdraw",
                occurred_at="2026-01-11T00:00:00Z",
            )
        ]
    )

    decision = ledger.check("bob", "marketing.lead_scoring", "ins-co")
    assert not decision.allowed and decision.reasons == ("withdrawn",)


def test_contact_check(ledger: ConsentLedger, clock: object) -> None:
    from consent.model import Channel

    ledger.record(
        [
            event(1, subject="carol", purpose="marketing.contact", data_categories="contact"),
            event(
                2,
                subject="carol",
                action="preference",
                purpose="",
                data_categories="",
                channel="sms",
                topics="offers",
                hours="09:00-21:00",
                timezone="Asia/Shanghai",
                max_per_day="1",
            ),
        ]
    )
    noon_shanghai = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)
    assert ledger.check_contact("carol", Channel.SMS, "offers", noon_shanghai).allowed
    assert ledger.check_contact("carol", Channel.SMS, "surveys", noon_shanghai).reasons == (
        "topic_not_allowed",
    )
    night = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
    assert (
        "outside_allowed_hours"
        in ledger.check_contact("carol", Channel.SMS, "offers", night).reasons
    )
    assert (
        "no_channel_preference"
        in ledger.check_contact("carol", Channel.EMAIL, "offers", noon_shanghai).reasons
    )
    ledger.record_contact("carol", Channel.SMS, "offers", noon_shanghai - timedelta(hours=1))
    assert ledger.check_contact("carol", Channel.SMS, "offers", noon_shanghai).reasons == (
        "daily_cap_reached",
    )
    assert ledger.check_contact("dave", Channel.SMS, "offers", noon_shanghai).reasons == (
        "no_contact_consent",
        "no_channel_preference",
    )


def test_history_and_signed_receipt(ledger: ConsentLedger) -> None:
    ledger.record([event(1, subject="erin", recipient="ins-co"), event(2, subject="other")])
    ledger.record(
        [
            event(
                3,
                subject="erin",
                recipient="ins-co",
                action="withdraw",
                occurred_at="2026-01-12T00:00:00Z",
            )
        ]
    )

    history = ledger.history("erin")
    receipt = ledger.receipt("erin")

    assert [h["action"] for h in history] == ["grant", "withdraw"]
    assert "erin" not in json.dumps(history) and "erin" not in json.dumps(receipt)
    assert verify_document(receipt, ledger.keys.public_key)
    assert receipt["consent_records"][0]["state"] == "withdrawn"
    assert receipt["consent_records"][0]["recipient_third_party"] == "ins-co"
    head = SignedTreeHead.from_dict(receipt["tree_head"])
    for ev in receipt["events"]:
        path = [bytes.fromhex(h) for h in ev["inclusion_proof"]]
        assert verify_inclusion(
            bytes.fromhex(ev["leaf_hash"]), ev["leaf_index"], head.tree_size, path, head.root_hash
        )
    with pytest.raises(UnknownSubjectError):
        ledger.receipt("nobody")


def test_nodes_table_has_every_perfect_subtree(ledger: ConsentLedger) -> None:
    ledger.record(_grants(11))
    with ledger.store.engine.connect() as conn:
        count = len(conn.execute(select(nodes.c.level)).all())
    assert count == 11 + 5 + 2 + 1  # leaves, pairs, quads, one octet


def test_fast_payload_equals_the_canonical_payload() -> None:
    from consent.model import SubjectKeyer, parse_event
    from consent.storage import _payload_from_content, leaf_payload

    ev = parse_event(
        event(1, subject="ünïcode-主体", notice_language="zh-CN"), SubjectKeyer(b"k" * 32)
    )
    when = datetime(2026, 1, 1, tzinfo=UTC)
    content = json.dumps(ev.content(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert _payload_from_content(7, "2026-01-01T00:00:00.000000Z", content) == leaf_payload(
        7, when, ev
    )


def test_recipient_registry_validates_and_upserts(ledger: ConsentLedger) -> None:
    base = {
        "recipient_id": "ins-co",
        "name": "Insurer",
        "contact": "dpo@insurer.example",
        "purposes": "marketing.lead_scoring",
        "processing_method": "federated scoring",
        "data_categories": "identifier.phone;income_level",
    }
    ledger.register_recipient(base)
    ledger.register_recipient({**base, "name": "Insurer Ltd"})
    with pytest.raises(ConsentInputError) as info:
        ledger.register_recipient({**base, "data_categories": "shoe_size"})
    assert info.value.field == "data_categories"
    assert [(r.recipient_id, r.name) for r in ledger.recipients()] == [("ins-co", "Insurer Ltd")]


def test_a_writer_blocked_past_the_limit_gets_ledger_busy(
    tmp_path: Path, keys: LedgerKeys, clock: Clock
) -> None:
    import sqlite3

    from consent.errors import LedgerBusyError
    from consent.storage import SqlLedgerStore

    path = tmp_path / "busy.sqlite3"
    store = SqlLedgerStore.open(f"sqlite:///{path}", busy_timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the ledger
    try:
        with pytest.raises(LedgerBusyError):
            ConsentLedger(store, keys, clock).record([event(1)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ConsentLedger(store, keys, clock).record([event(1)]).appended == 1
    store.close()
