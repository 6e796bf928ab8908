"""The consent ledger: record events, verify the log, cut cohorts, answer checks, issue receipts.

:class:`ConsentLedger` is the service the CLI and the HTTP API call. It takes its storage, keys and
clock as arguments (tests inject them). It never logs or returns a raw subject identifier: callers
pass the raw identifier in, the ledger keys it and forgets it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consent.errors import (
    ConsentInputError,
    LedgerIntegrityError,
    ProofError,
    UnknownSubjectError,
)
from consent.io import iter_draft_batches
from consent.keys import LedgerKeys, key_id, verify_signature
from consent.merkle import (
    Frontier,
    consistency_path,
    inclusion_path,
    leaf_hash,
)
from consent.model import (
    DATA_CATEGORIES,
    PURPOSES,
    SENSITIVE_CATEGORIES,
    Action,
    Channel,
    ConsentEvent,
    ConsentState,
    Recipient,
    canonical_json,
    format_time,
    parse_event,
    parse_hours,
    parse_recipient,
    to_micros,
)
from consent.storage import ENTRY_COLUMNS, AppendResult, SqlLedgerStore, StoredEntry, default_url
from consent.tree_head import SignedTreeHead

_RECEIPT_DOMAIN = b"pec-consent-receipt-v1\n"
CONTACT_PURPOSE = "marketing.contact"


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class Exclusion(StrEnum):
    """Why a known subject is not in a cohort."""

    NO_CONSENT = "no_consent"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    INVALIDATED = "invalidated"
    OTHER_RECIPIENT = "other_recipient"
    CATEGORIES_NOT_COVERED = "categories_not_covered"


@dataclass(frozen=True)
class CohortSnapshot:
    """Subjects eligible for (purpose, recipient, categories) at a time, bound to a tree head."""

    purpose: str
    recipient: str
    data_categories: tuple[str, ...]
    at: datetime
    tree_head: SignedTreeHead | None
    eligible: int
    excluded: dict[str, int]
    subjects_sha256: str

    def body(self) -> dict[str, Any]:
        """The JSON form without signature."""
        return {
            "type": "pec.consent.cohort",
            "purpose": self.purpose,
            "recipient": self.recipient or None,
            "data_categories": list(self.data_categories),
            "at": format_time(self.at),
            "tree_head": self.tree_head.to_dict() if self.tree_head else None,
            "eligible": self.eligible,
            "excluded": dict(sorted(self.excluded.items())),
            "subjects_sha256": self.subjects_sha256,
        }


@dataclass(frozen=True)
class VerificationReport:
    """The outcome of :meth:`ConsentLedger.verify`."""

    ok: bool
    entries_checked: int
    tree_heads_checked: int
    tree_head: SignedTreeHead | None
    error: LedgerIntegrityError | None = None

    @property
    def first_bad_entry(self) -> int | None:
        """Position of the first bad entry, when the failure is tied to one."""
        return self.error.entry if self.error else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``pec consent verify --json``, ``GET /consent/verify``)."""
        return {
            "ok": self.ok,
            "entries_checked": self.entries_checked,
            "tree_heads_checked": self.tree_heads_checked,
            "tree_head": self.tree_head.to_dict() if self.tree_head else None,
            "first_bad_entry": self.first_bad_entry,
            "reason": self.error.reason if self.error else None,
        }


@dataclass(frozen=True)
class Decision:
    """An answer to a consent or contact check, with the reasons when it is no."""

    allowed: bool
    reasons: tuple[str, ...] = ()
    state: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def sign_document(body: Mapping[str, Any], keys: LedgerKeys) -> dict[str, Any]:
    """Return ``body`` plus ``key_id`` and an Ed25519 ``signature`` over its canonical JSON."""
    doc = dict(body)
    doc["key_id"] = keys.key_id
    doc["signature"] = keys.sign(_RECEIPT_DOMAIN + canonical_json(doc)).hex()
    return doc


def verify_document(doc: Mapping[str, Any], public_key: Ed25519PublicKey) -> bool:
    """Check a document signed by :func:`sign_document` (receipts, cohort receipts)."""
    body = dict(doc)
    sig_hex = body.pop("signature", None)
    if not isinstance(sig_hex, str) or body.get("key_id") != key_id(public_key):
        return False
    try:
        sig = bytes.fromhex(sig_hex)
    except ValueError:
        return False
    return verify_signature(public_key, sig, _RECEIPT_DOMAIN + canonical_json(body))


class ConsentLedger:
    """One node's consent ledger."""

    def __init__(
        self,
        store: SqlLedgerStore,
        keys: LedgerKeys,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.keys = keys
        self.clock = clock

    @classmethod
    def open(cls, home: Path, url: str | None = None) -> ConsentLedger:
        """Open the ledger of the node at ``home`` (default database: SQLite in ``home``)."""
        keys = LedgerKeys.load_or_create(home)
        return cls(SqlLedgerStore.open(url or default_url(home)), keys)

    def close(self) -> None:
        """Release database connections."""
        self.store.close()

    # -- writing -------------------------------------------------------------------------------

    def import_file(self, path: Path) -> AppendResult:
        """Import a CSV or JSONL file atomically and idempotently.

        Raises:
            ConsentInputError: a bad row (the file is rejected whole; the ledger is unchanged).
            DuplicateEventError: an ``event_id`` reused with different content.
        """
        return self.store.append_drafts(
            iter_draft_batches(path, self.keys.keyer), self.keys, self.clock, source=path.name
        )

    def record(self, rows: Sequence[Mapping[str, Any]], *, source: str = "request") -> AppendResult:
        """Record events given as dicts (the HTTP API); all or nothing.

        Raises:
            ConsentInputError: a bad event, naming its index (``row``, 1-based) and field.
        """
        events = []
        for n, row in enumerate(rows, start=1):
            try:
                events.append((n, parse_event(row, self.keys.keyer)))
            except ConsentInputError as exc:
                raise exc.located(row=n, source=source) from None
        return self.store.append(events, self.keys, self.clock, source=source)

    def record_contact(
        self, subject_id: str, channel: Channel, topic: str, at: datetime | None = None
    ) -> None:
        """Record a contact made (counts toward frequency caps)."""
        self.store.record_contact(
            self.keys.keyer.key_of(subject_id), channel.value, topic, at or self.clock()
        )

    def register_recipient(self, data: Mapping[str, Any]) -> Recipient:
        """Register or update a third-party recipient (PIPL Art. 23 notice set).

        Raises:
            ConsentInputError: a bad field.
        """
        recipient = parse_recipient(data)
        self.store.put_recipient(recipient, self.clock())
        return recipient

    def recipients(self) -> list[Recipient]:
        """All registered recipients."""
        return self.store.recipients()

    def rebuild_projections(self) -> int:
        """Rebuild the current-state projections from the log."""
        return self.store.rebuild_projections()

    # -- tree heads and proofs -----------------------------------------------------------------

    def tree_head(self) -> SignedTreeHead | None:
        """The latest signed tree head."""
        return self.store.latest_tree_head()

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> dict[str, Any]:
        """Audit path of entry ``index`` in the tree of ``tree_size`` (default: latest head).

        Raises:
            ProofError: index or size outside the ledger, or no signed head of that size.
        """
        head = self._head_for(tree_size)
        if not 0 <= index < head.tree_size:
            raise ProofError("index must be below the tree size")
        size = head.tree_size
        path, leaf = self.store.with_nodes(
            lambda perfect: (inclusion_path(index, size, perfect), perfect(0, index))
        )
        return {
            "leaf_index": index,
            "tree_size": head.tree_size,
            "leaf_hash": leaf.hex(),
            "audit_path": [h.hex() for h in path],
            "tree_head": head.to_dict(),
        }

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> dict[str, Any]:
        """Consistency proof between two signed tree heads.

        Raises:
            ProofError: sizes out of order or without a signed head.
        """
        new = self._head_for(new_size)
        if not 0 < old_size <= new.tree_size:
            raise ProofError("old_size must be between 1 and the new tree size")
        old = self.store.tree_head(old_size)
        if old is None:
            raise ProofError("no signed tree head has that old_size")
        size = new.tree_size
        proof = self.store.with_nodes(lambda perfect: consistency_path(old_size, size, perfect))
        return {
            "old_size": old_size,
            "new_size": new.tree_size,
            "proof": [h.hex() for h in proof],
            "old_tree_head": old.to_dict(),
            "new_tree_head": new.to_dict(),
        }

    def _head_for(self, tree_size: int | None) -> SignedTreeHead:
        head = (
            self.store.latest_tree_head() if tree_size is None else self.store.tree_head(tree_size)
        )
        if head is None:
            raise ProofError(
                "the ledger is empty" if tree_size is None else "no signed tree head of that size"
            )
        return head

    # -- verification --------------------------------------------------------------------------

    def verify(
        self,
        public_key: Ed25519PublicKey | None = None,
        *,
        workers: int = 1,
        chunk_level: int = 16,
    ) -> VerificationReport:
        """Recompute every leaf, subtree and signed tree head; report the first bad entry.

        Streams the log a page at a time. Detects any update, deletion, reordering or insertion
        of a past entry, a forged or altered tree head, and entries no tree head covers. With
        ``workers > 1`` and a ledger longer than two chunks of ``2**chunk_level`` entries, chunks
        are checked in parallel worker processes (:mod:`consent.verify`); the report is the
        same as the serial one.
        """
        pk = public_key or self.keys.public_key
        if workers > 1 and self.store.entries_end() > 2 << chunk_level:
            return self._verify_parallel(pk, workers, chunk_level)
        heads = self.store.iter_tree_heads()
        frontier = Frontier()
        completed: list[tuple[int, int, bytes]] = []
        checked_heads = 0
        last_good: SignedTreeHead | None = None
        next_head = next(heads, None)
        pos = 0

        def fail(reason: str, entry: int | None) -> VerificationReport:
            return VerificationReport(
                False, pos, checked_heads, last_good, LedgerIntegrityError(reason, entry=entry)
            )

        for page in self.store.iter_entry_pages(20_000):
            stored = self.store.nodes_ending_in(int(page[0][0]), int(page[-1][0]) + 1)
            for row in page:
                seq = int(row[0])
                if seq != pos:
                    if seq > pos:
                        return fail("entry is missing (deleted?)", pos)
                    return fail("entry position appears twice", seq)
                problem = _check_entry(row, pos)
                if problem:
                    return fail(problem, pos)
                leaf = leaf_hash(row[3].encode("utf-8"))
                if stored.get((0, pos)) != leaf:
                    return fail("stored leaf hash does not match the entry's content", pos)
                completed.clear()
                frontier.push(leaf, completed)
                for level, index, h in completed:
                    if stored.get((level, index)) != h:
                        first = index << level
                        last = first + (1 << level) - 1
                        return fail(
                            f"entries {first}..{last} disagree with the stored Merkle subtree: "
                            "an entry in this range was rewritten with its leaf hash",
                            first,
                        )
                pos += 1
                while next_head is not None and next_head.tree_size == pos:
                    if not next_head.verify(pk):
                        return fail(
                            f"signed tree head of size {pos} has an invalid signature or key",
                            None,
                        )
                    if next_head.root_hash != frontier.root():
                        start = last_good.tree_size if last_good else 0
                        return fail(
                            f"entries {start}..{pos - 1} do not match the signed tree head of "
                            f"size {pos}",
                            start,
                        )
                    checked_heads += 1
                    last_good = next_head
                    next_head = next(heads, None)
                if next_head is not None and next_head.tree_size < pos:
                    return fail("a signed tree head does not fall on an entry boundary", None)
        if next_head is not None:
            return fail(
                f"the signed tree head of size {next_head.tree_size} covers entries that are "
                "missing",
                pos,
            )
        covered = last_good.tree_size if last_good else 0
        if pos > covered:
            return fail("entry is not covered by any signed tree head", covered)
        recorded = self.store.size()
        if recorded != pos:
            return fail(
                f"the ledger row says {recorded} entries but {pos} exist", min(pos, recorded)
            )
        if pos == 0 and last_good is None:
            return VerificationReport(True, 0, 0, None)
        return VerificationReport(True, pos, checked_heads, last_good)

    def _verify_parallel(
        self, pk: Ed25519PublicKey, workers: int, chunk_level: int
    ) -> VerificationReport:
        from consent.merkle import fold_root
        from consent.verify import run_chunks

        store = self.store
        end = store.entries_end()
        width = 1 << chunk_level
        g = Frontier()
        checked_heads = 0
        last_good: SignedTreeHead | None = None
        pos = 0
        heads_of: dict[int, list[SignedTreeHead]] = {}

        def fail(reason: str, entry: int | None) -> VerificationReport:
            return VerificationReport(
                False, pos, checked_heads, last_good, LedgerIntegrityError(reason, entry=entry)
            )

        def sizes_for(a: int, b: int) -> list[int]:
            heads_of[a] = store.tree_heads_between(a, b)
            return [h.tree_size for h in heads_of[a]]

        for r in run_chunks(store.url(), end, chunk_level, workers, sizes_for):
            limit = r.start + r.count
            for h in heads_of.pop(r.start):
                if h.tree_size > limit:
                    break
                pos = h.tree_size
                if not h.verify(pk):
                    return fail(
                        f"signed tree head of size {pos} has an invalid signature or key", None
                    )
                if fold_root(g.stack + r.head_stacks[pos]) != h.root_hash:
                    start = last_good.tree_size if last_good else 0
                    return fail(
                        f"entries {start}..{pos - 1} do not match the signed tree head of "
                        f"size {pos}",
                        start,
                    )
                checked_heads += 1
                last_good = h
            pos = limit
            if r.error is not None:
                return fail(r.error[1], r.error[0])
            if r.count == width:
                for node in g.append_subtree(chunk_level, fold_root(r.stack)):
                    stored = store.perfect(node.level, node.index)
                    if stored != node.hash:
                        first = node.index << node.level
                        last = first + (1 << node.level) - 1
                        return fail(
                            f"entries {first}..{last} disagree with the stored Merkle subtree: "
                            "an entry in this range was rewritten with its leaf hash",
                            first,
                        )
            else:
                g.stack.extend(r.stack)
                g.size += r.count
                if limit < end:
                    return fail("entry is missing (deleted?)", pos)
                break
        later = store.tree_heads_between(pos, 2**62)
        if later:
            return fail(
                f"the signed tree head of size {later[0].tree_size} covers entries that are "
                "missing",
                pos,
            )
        covered = last_good.tree_size if last_good else 0
        if pos > covered:
            return fail("entry is not covered by any signed tree head", covered)
        recorded = store.size()
        if recorded != pos:
            return fail(
                f"the ledger row says {recorded} entries but {pos} exist", min(pos, recorded)
            )
        return VerificationReport(True, pos, checked_heads, last_good)

    # -- queries -------------------------------------------------------------------------------

    def subject_key(self, subject_id: str) -> str:
        """Key a raw subject identifier."""
        return self.keys.keyer.key_of(subject_id)

    def history(self, subject_id: str) -> list[dict[str, Any]]:
        """A subject's events in log order, with their ledger positions.

        Raises:
            UnknownSubjectError: no event for that subject.
        """
        entries = self.store.subject_entries(self.subject_key(subject_id))
        if not entries:
            raise UnknownSubjectError("no event is recorded for this subject")
        out = []
        for e in entries:
            body = json.loads(e.payload)
            out.append({"seq": e.seq, "recorded_at": body["recorded_at"], **body["event"]})
        return out

    def check(
        self,
        subject_id: str,
        purpose: str,
        recipient: str = "",
        data_categories: Iterable[str] = (),
        at: datetime | None = None,
    ) -> Decision:
        """Answer whether a subject's data may be used for ``purpose`` by ``recipient`` now.

        Reads the current-state projection.

        Raises:
            ConsentInputError: unknown purpose or category.
        """
        cats = _check_query(purpose, data_categories)
        when = at or self.clock()
        row = self.store.state_row(self.subject_key(subject_id), purpose, recipient)
        reason = _classify_state(row, recipient, cats, to_micros(when), has_other=False)
        if reason is None:
            return Decision(True, (), ConsentState.GIVEN.value)
        return Decision(False, (reason.value,), row["state"] if row else None)

    def check_contact(
        self, subject_id: str, channel: Channel, topic: str, at: datetime | None = None
    ) -> Decision:
        """Answer whether we may contact a subject on ``channel`` about ``topic`` at ``at``.

        Needs a given, unexpired ``marketing.contact`` consent, an opt-in for the channel, the
        topic among the allowed topics (when any are listed), the local time inside the allowed
        hours, and the daily and weekly caps not reached.
        """
        when = at or self.clock()
        key = self.subject_key(subject_id)
        reasons: list[str] = []
        row = self.store.state_row(key, CONTACT_PURPOSE, "")
        if _classify_state(row, "", (), to_micros(when), has_other=False) is not None:
            reasons.append("no_contact_consent")
        pref = self.store.preference_row(key, channel.value)
        if pref is None:
            reasons.append("no_channel_preference")
        else:
            if not pref["allowed"]:
                reasons.append("channel_opted_out")
            topics = [t for t in str(pref["topics"]).split(";") if t]
            if topics and topic not in topics:
                reasons.append("topic_not_allowed")
            if pref["hours"]:
                start, end = parse_hours(str(pref["hours"]))
                local = when.astimezone(ZoneInfo(str(pref["timezone"]))).time()
                inside = start <= local < end if start <= end else (local >= start or local < end)
                if not inside:
                    reasons.append("outside_allowed_hours")
            if pref["max_per_day"] is not None and self.store.count_contacts(
                key, channel.value, when - timedelta(days=1)
            ) >= int(pref["max_per_day"]):
                reasons.append("daily_cap_reached")
            if pref["max_per_week"] is not None and self.store.count_contacts(
                key, channel.value, when - timedelta(days=7)
            ) >= int(pref["max_per_week"]):
                reasons.append("weekly_cap_reached")
        return Decision(not reasons, tuple(reasons))

    def cohort(
        self,
        purpose: str,
        recipient: str = "",
        data_categories: Iterable[str] = (),
        at: datetime | None = None,
        sink: Callable[[str], None] | None = None,
    ) -> CohortSnapshot:
        """Cut the cohort eligible at ``at`` under the latest signed tree head.

        ``sink`` receives each eligible subject key in ascending order (streamed). Subjects the
        ledger knows but who are not eligible are counted by :class:`Exclusion` reason.

        Raises:
            ConsentInputError: unknown purpose or category, malformed recipient.
        """
        cats = _check_query(purpose, data_categories)
        when = at or self.clock()
        at_us = to_micros(when)
        need_sensitive = any(c in SENSITIVE_CATEGORIES for c in cats)
        digest = hashlib.sha256()
        eligible = 0
        with self.store.cohort_view(purpose, recipient, cats, need_sensitive, at_us) as view:
            head = view.head
            size = head.tree_size if head else 0
            counts = dict(view.counts)
            seen = view.subjects_with_records

            def late_verdicts() -> Iterator[tuple[str, bool]]:
                # Subjects with a record newer than the cut: undo the projection's verdict and
                # settle them from the log as of ``at``.
                nonlocal seen
                rows = (r for page in view.late_rows for r in page)
                for subject, group in _group(rows):
                    now_reason = _settle(group, recipient, cats, need_sensitive, at_us)
                    assert now_reason is not None  # the projection has rows for it
                    counts[now_reason] -= 1
                    past_rows = []
                    for subj, rcpt, st, granted, valid_until, explicit, occurred, seq in group:
                        if occurred > at_us or seq >= size:
                            past = self.store.state_at(subj, purpose, rcpt, at_us, size)
                            if past is None:
                                continue
                            st, granted, valid_until, explicit = past
                        past_rows.append(
                            (subj, rcpt, st, granted, valid_until, explicit, occurred, seq)
                        )
                    reason = _settle(past_rows, recipient, cats, need_sensitive, at_us)
                    if reason is None:
                        seen -= 1
                    else:
                        counts[reason] = counts.get(reason, 0) + 1
                    yield subject, reason == _ELIGIBLE

            late = late_verdicts()
            pending = next(late, None)
            for page in view.eligible_pages:
                # Eligible as the projection has it, not merely given and unexpired.
                counts[_ELIGIBLE] += len(page)
                counts[Exclusion.CATEGORIES_NOT_COVERED.value] -= len(page)
                if pending is not None:
                    # Merge the late subjects' verdicts into the ascending stream.
                    merged: list[str] = []
                    for key in page:
                        while pending is not None and pending[0] < key:
                            if pending[1]:
                                merged.append(pending[0])
                            pending = next(late, None)
                        if pending is not None and pending[0] == key:
                            keep = pending[1]
                            pending = next(late, None)
                            if not keep:
                                continue
                        merged.append(key)
                    page = merged
                eligible += len(page)
                _emit(page, digest, sink)
            while pending is not None:
                if pending[1]:
                    eligible += 1
                    _emit([pending[0]], digest, sink)
                pending = next(late, None)
            known = view.known
        if counts.get(_ELIGIBLE, 0) != eligible:
            raise LedgerIntegrityError("the cohort's eligible count disagrees with its subjects")
        counts[Exclusion.NO_CONSENT.value] = max(known - seen, 0)
        return CohortSnapshot(
            purpose=purpose,
            recipient=recipient,
            data_categories=cats,
            at=when,
            tree_head=head,
            eligible=eligible,
            excluded={r.value: counts.get(r.value, 0) for r in Exclusion},
            subjects_sha256=digest.hexdigest(),
        )

    def cohort_receipt(self, snapshot: CohortSnapshot) -> dict[str, Any]:
        """The signed JSON receipt of a cohort snapshot."""
        return sign_document(snapshot.body(), self.keys)

    def receipt(self, subject_id: str) -> dict[str, Any]:
        """A subject's consent record as JSON with ISO/IEC TS 27560 field names, signed.

        Each event carries its inclusion proof against the latest signed tree head, so the
        receipt can be checked without access to the ledger.

        Raises:
            UnknownSubjectError: no event for that subject.
        """
        key = self.subject_key(subject_id)
        entries = self.store.subject_entries(key)
        head = self.store.latest_tree_head()
        if not entries or head is None:
            raise UnknownSubjectError("no event is recorded for this subject")
        records: dict[tuple[str, str], dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        preferences: dict[str, dict[str, Any]] = {}
        with self.store.engine.connect() as conn:
            perfect = self.store.perfect_reader(conn)
            for e in entries:
                if e.seq >= head.tree_size:
                    continue
                body = json.loads(e.payload)
                ev = ConsentEvent.from_content(body["event"])
                events.append(
                    {
                        "event_id": ev.event_id,
                        "event_type": ev.action.value,
                        "event_time": format_time(ev.occurred_at),
                        "event_recorded_time": body["recorded_at"],
                        "event_state": (
                            "preference"
                            if ev.action is Action.PREFERENCE
                            else _ACTION_STATE[ev.action.value]
                        ),
                        "purpose": ev.purpose or None,
                        "recipient_third_party": ev.recipient or None,
                        "leaf_index": e.seq,
                        "leaf_hash": perfect(0, e.seq).hex(),
                        "inclusion_proof": [
                            h.hex() for h in inclusion_path(e.seq, head.tree_size, perfect)
                        ],
                    }
                )
                if ev.preference is not None:
                    preferences[ev.preference.channel.value] = ev.preference.to_dict()
                    continue
                records[(ev.purpose, ev.recipient)] = _record_27560(ev)
        registry = {r.recipient_id: r.to_dict() for r in self.store.recipients()}
        for record in records.values():
            rid = record["recipient_third_party"]
            if rid:
                record["recipient_third_party_details"] = registry.get(rid)
        body_doc = {
            "schema_version": "ISO/IEC TS 27560:2023 (pec-1)",
            "record_id": hashlib.sha256(f"{key}:{head.tree_size}".encode()).hexdigest(),
            "pii_principal_id": key,
            "pii_principal_id_type": "hmac-sha256 keyed hash",
            "consent_records": [records[k] for k in sorted(records)],
            "events": events,
            "preferences": [preferences[c] for c in sorted(preferences)],
            "tree_head": head.to_dict(),
            "receipt_issued_time": format_time(self.clock()),
        }
        return sign_document(body_doc, self.keys)


_ACTION_STATE: dict[str, str] = {
    Action.GRANT.value: ConsentState.GIVEN.value,
    Action.RENEW.value: ConsentState.GIVEN.value,
    Action.REFUSE.value: ConsentState.REFUSED.value,
    Action.WITHDRAW.value: ConsentState.WITHDRAWN.value,
    Action.EXPIRE.value: ConsentState.EXPIRED.value,
    Action.INVALIDATE.value: ConsentState.INVALIDATED.value,
}

_STATE_EXCLUSION = {
    ConsentState.REFUSED.value: Exclusion.REFUSED,
    ConsentState.WITHDRAWN.value: Exclusion.WITHDRAWN,
    ConsentState.EXPIRED.value: Exclusion.EXPIRED,
    ConsentState.INVALIDATED.value: Exclusion.INVALIDATED,
}


def _classify_state(
    row: Mapping[str, Any] | None,
    recipient: str,
    cats: Sequence[str],
    at_us: int,
    *,
    has_other: bool,
) -> Exclusion | None:
    """Return why a (subject, purpose, recipient) record does not qualify, or None if it does."""
    if row is None:
        return Exclusion.OTHER_RECIPIENT if has_other else Exclusion.NO_CONSENT
    st = row["state"]
    if st != ConsentState.GIVEN.value:
        return _STATE_EXCLUSION[st]
    valid_until = row["valid_until_us"]
    if valid_until is not None and valid_until <= at_us:
        return Exclusion.EXPIRED
    granted = set(str(row["categories"]).split(";")) if row["categories"] else set()
    if not set(cats) <= granted:
        return Exclusion.CATEGORIES_NOT_COVERED
    if any(c in SENSITIVE_CATEGORIES for c in cats) and not row["explicit"]:
        return Exclusion.CATEGORIES_NOT_COVERED
    return None


def _check_query(purpose: str, data_categories: Iterable[str]) -> tuple[str, ...]:
    if purpose not in PURPOSES:
        raise ConsentInputError("is not in the purpose taxonomy", field="purpose")
    cats = tuple(sorted(set(data_categories)))
    for c in cats:
        if c not in DATA_CATEGORIES:
            raise ConsentInputError(
                "holds a category outside the taxonomy", field="data_categories"
            )
    return cats


def _group(
    rows: Iterable[tuple[Any, ...]],
) -> Iterator[tuple[Any, list[tuple[Any, ...]]]]:
    """Group consecutive rows by their first column."""
    current: Any = None
    bucket: list[tuple[Any, ...]] = []
    for r in rows:
        if r[0] != current or not bucket:
            if bucket:
                yield current, bucket
            current, bucket = r[0], []
        bucket.append(r)
    if bucket:
        yield current, bucket


_ELIGIBLE = "eligible"


def _settle(
    rows: Sequence[tuple[Any, ...]],
    recipient: str,
    cats: Sequence[str],
    need_sensitive: bool,
    at_us: int,
) -> str | None:
    """Verdict for one subject's projection rows: ``eligible``, an exclusion, or None (no rows).

    The same rules as the SQL of :meth:`SqlLedgerStore.cohort_view`.
    """
    if not rows:
        return None
    mine = next((r for r in rows if r[1] == recipient), None)
    if mine is None:
        return Exclusion.OTHER_RECIPIENT.value
    st, granted, valid_until, explicit = mine[2], mine[3], mine[4], mine[5]
    if st != ConsentState.GIVEN.value:
        return str(st)
    if valid_until is not None and valid_until <= at_us:
        return Exclusion.EXPIRED.value
    if (cats and not set(cats) <= set(str(granted).split(";"))) or (
        need_sensitive and not explicit
    ):
        return Exclusion.CATEGORIES_NOT_COVERED.value
    return _ELIGIBLE


def _emit(keys: list[str], digest: Any, sink: Callable[[str], None] | None) -> None:
    if not keys:
        return
    digest.update(("\n".join(keys) + "\n").encode("ascii"))
    if sink is not None:
        for k in keys:
            sink(k)


def _pages(items: Iterator[StoredEntry], size: int) -> Iterator[list[StoredEntry]]:
    page: list[StoredEntry] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


_PAYLOAD_HEAD = '{"event":'
_PAYLOAD_TAIL = re.compile(r',"recorded_at":"[0-9T:.-]+Z","seq":(-?\d+)\}\Z')


def _micros(text: Any) -> int | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("not a timestamp")
    return to_micros(datetime.fromisoformat(text))


def _check_entry(row: tuple[Any, ...], pos: int) -> str | None:
    """Return what is wrong with one stored entry (a tuple in ``ENTRY_COLUMNS`` order), or None.

    The leaf hash covers the payload bytes; this checks that the payload is a ledger entry for
    this position and that every indexed column (which cohorts and checks read) agrees with it.
    """
    payload = row[3]
    # The tail can only start at the last ',"recorded_at":' (a match elsewhere would have to
    # contain it, and the tail admits no quote there); matching there is search() without the
    # scan.
    tail = _PAYLOAD_TAIL.match(payload, max(payload.rfind(',"recorded_at":'), 0))
    if tail is None or not payload.startswith(_PAYLOAD_HEAD):
        return "payload is not a well-formed ledger entry"
    if int(tail.group(1)) != pos:
        return f"payload records position {tail.group(1)}, not {pos} (entries reordered?)"
    content_json = payload[len(_PAYLOAD_HEAD) : tail.start()]
    if hashlib.sha256(content_json.encode("utf-8")).digest() != row[2]:
        return "content hash does not match the payload"
    try:
        ev = json.loads(content_json)
        expected = (
            ev["event_id"],
            ev["subject_key"],
            ev["action"],
            ev["purpose"],
            ev["recipient"],
            ";".join(ev["data_categories"]),
            _micros(ev["occurred_at"]),
            _micros(ev.get("valid_until")),
            ev["explicit"],
        )
    except (ValueError, KeyError, TypeError):
        return "payload is not a well-formed ledger entry"
    actual = (row[1], *row[4:])
    if actual != expected:
        for k, (a, b) in enumerate(zip(actual, expected, strict=True)):
            if a != b:
                name = ENTRY_COLUMNS[1] if k == 0 else ENTRY_COLUMNS[k + 3]
                return f"column {name!r} disagrees with the entry's payload"
    return None


def _record_27560(ev: ConsentEvent) -> dict[str, Any]:
    sensitive = [c for c in ev.data_categories if c in SENSITIVE_CATEGORIES]
    return {
        "purpose": ev.purpose,
        "lawful_basis": ev.legal_basis.value,
        "pii_categories": list(ev.data_categories),
        "sensitive_pii_categories": sensitive,
        "consent_type": "explicit" if ev.explicit else "expressed",
        "third_party_disclosure": bool(ev.recipient),
        "recipient_third_party": ev.recipient or None,
        "state": _ACTION_STATE[ev.action.value],
        "jurisdiction": ev.jurisdiction,
        "collection_method": ev.method.value,
        "notice": {
            "notice_id": ev.notice_id,
            "version": ev.notice_version,
            "language": ev.notice_language,
            "content_hash": ev.notice_hash,
        },
        "event_time": format_time(ev.occurred_at),
        "validity_end": format_time(ev.valid_until) if ev.valid_until else None,
    }


__all__ = [
    "CohortSnapshot",
    "ConsentLedger",
    "Decision",
    "Exclusion",
    "VerificationReport",
    "sign_document",
    "verify_document",
]
