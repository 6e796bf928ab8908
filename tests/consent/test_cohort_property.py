"""Property: the projection-based cohort equals a naive replay of the log, for any history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import event

from consent.keys import LedgerKeys
from consent.ledger import ConsentLedger
from consent.storage import SqlLedgerStore

pytestmark = pytest.mark.integration

BASE = datetime(2026, 1, 1, tzinfo=UTC)
STATE = {
    "grant": "given",
    "renew": "given",
    "refuse": "refused",
    "withdraw": "withdrawn",
    "expire": "expired",
    "invalidate": "invalidated",
}

events_st = st.lists(
    st.tuples(
        st.integers(0, 5),  # subject
        st.sampled_from(["grant", "renew", "refuse", "withdraw", "expire", "invalidate"]),
        st.sampled_from(["", "ins-co", "media-co"]),
        st.sampled_from(["marketing.lead_scoring", "marketing.lookalike"]),
        st.integers(0, 30),  # day occurred
        st.one_of(st.none(), st.integers(1, 40)),  # valid for days
        st.sampled_from(["identifier.phone", "identifier.phone;income_level"]),
    ),
    min_size=1,
    max_size=25,
)


def naive(
    evs: list[tuple], at: datetime, recipient: str, cats: set[str]
) -> tuple[set[int], dict[str, int]]:
    latest: dict[tuple[int, str], tuple[datetime, int, tuple]] = {}
    known = set()
    for seq, e in enumerate(evs):
        subj, action, rcpt, purpose, day, valid, c = e
        occurred = BASE + timedelta(days=day)
        if occurred > at:
            continue
        known.add(subj)
        if purpose != "marketing.lead_scoring":
            continue
        key = (subj, rcpt)
        if key not in latest or (latest[key][0], latest[key][1]) < (occurred, seq):
            latest[key] = (occurred, seq, e)
    eligible: set[int] = set()
    excluded: dict[str, int] = {}
    for subj in known:
        mine = latest.get((subj, recipient))
        others = any(k[0] == subj and k[1] != recipient for k in latest)
        if mine is None:
            reason = "other_recipient" if others else "no_consent"
        else:
            _, _, (_, action, _, _, day, valid, c) = mine
            st_ = STATE[action]
            if st_ != "given":
                reason = st_
            elif valid is not None and BASE + timedelta(days=day + valid) <= at:
                reason = "expired"
            elif not cats <= set(c.split(";")):
                reason = "categories_not_covered"
            else:
                reason = None
        if reason is None:
            eligible.add(subj)
        else:
            excluded[reason] = excluded.get(reason, 0) + 1
    return eligible, excluded


@settings(max_examples=25, deadline=None)
@given(
    events_st, st.integers(0, 45), st.sampled_from(["", "ins-co"]), st.booleans(), st.integers(1, 3)
)
def test_cohort_equals_naive_replay(
    tmp_path_factory: pytest.TempPathFactory,
    evs: list[tuple],
    at_day: int,
    recipient: str,
    need_income: bool,
    batches: int,
) -> None:
    path = tmp_path_factory.mktemp("prop") / "l.sqlite3"
    ledger = ConsentLedger(SqlLedgerStore.open(f"sqlite:///{path}"), LedgerKeys.generate())
    try:
        rows = []
        for i, (subj, action, rcpt, purpose, day, valid, c) in enumerate(evs):
            occurred = BASE + timedelta(days=day)
            rows.append(
                event(
                    i,
                    subject=f"s{subj}",
                    action=action,
                    recipient=rcpt,
                    purpose=purpose,
                    occurred_at=occurred.isoformat(),
                    valid_until=(occurred + timedelta(days=valid)).isoformat() if valid else "",
                    data_categories=c,
                )
            )
        step = max(1, len(rows) // batches)
        for start in range(0, len(rows), step):
            ledger.record(rows[start : start + step])
        at = BASE + timedelta(days=at_day, hours=12)
        cats = {"identifier.phone", "income_level"} if need_income else {"identifier.phone"}

        keys: list[str] = []

        snap = ledger.cohort("marketing.lead_scoring", recipient, sorted(cats), at, keys.append)

        eligible, excluded = naive(evs, at, recipient, cats)
        assert snap.eligible == len(eligible) == len(keys)
        assert keys == sorted(ledger.subject_key(f"s{s}") for s in eligible)
        assert {k: v for k, v in snap.excluded.items() if v} == excluded
    finally:
        ledger.close()
