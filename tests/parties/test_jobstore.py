"""The job store's contract, run against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from parties.errors import JobStateError, NodeConfigError, ReplayedMessage, UnknownJob
from parties.jobstore import JobState, SqlJobStore

SPEC = {"kind": "overlap", "purpose": "analytics.overlap", "partner": "autodata"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def store(job_db: str) -> Iterator[SqlJobStore]:
    opened = SqlJobStore.open(job_db, clock=Clock())
    try:
        yield opened
    finally:
        opened.close()


def test_a_job_moves_forward_and_keeps_its_history(store: SqlJobStore) -> None:
    store.create("j1", side="brand", peer="autodata", spec=SPEC, state=JobState.PROPOSED)

    store.update("j1", state=JobState.APPROVED)
    store.update("j1", state=JobState.RUNNING, progress=0.5)
    done = store.update(
        "j1", state=JobState.COMPLETED, progress=1, metrics={"seconds": 3}, outputs={"count": 7}
    )

    assert done.state is JobState.COMPLETED
    assert (done.progress, done.metrics, done.outputs) == (1.0, {"seconds": 3}, {"count": 7})
    assert done.spec == SPEC and done.kind == "overlap" and done.purpose == "analytics.overlap"
    states = [e["detail"]["state"] for e in store.events("j1") if e["kind"] == "state"]
    assert states == ["proposed", "approved", "running", "completed"]


def test_an_ended_job_never_changes_and_states_never_go_back(store: SqlJobStore) -> None:
    store.create("j1", side="brand", peer="p", spec=SPEC, state=JobState.APPROVED)
    with pytest.raises(JobStateError):
        store.update("j1", state=JobState.PROPOSED)
    store.update("j1", state=JobState.FAILED, reason="partner stopped answering")

    with pytest.raises(JobStateError):
        store.update("j1", state=JobState.COMPLETED)
    with pytest.raises(JobStateError):
        store.update("j1", outputs={"count": 1})
    assert store.get("j1").reason == "partner stopped answering"
    assert store.get("j1").outputs == {}


def test_a_job_id_is_used_once(store: SqlJobStore) -> None:
    store.create("j1", side="partner", peer="brand", spec=SPEC, state=JobState.APPROVED)
    with pytest.raises(ReplayedMessage):
        store.create("j1", side="partner", peer="brand", spec=SPEC, state=JobState.APPROVED)


def test_unknown_jobs_are_named(store: SqlJobStore) -> None:
    with pytest.raises(UnknownJob):
        store.get("nope")
    with pytest.raises(UnknownJob):
        store.update("nope", progress=0.1)
    with pytest.raises(UnknownJob):
        store.add_event("nope", "decision", {})
    assert store.find("nope") is None


def test_unfinished_jobs_are_what_a_restarted_node_settles(store: SqlJobStore) -> None:
    states = [("a", JobState.RUNNING), ("b", JobState.COMPLETED), ("c", JobState.APPROVED)]
    for job, state in states:
        store.create(job, side="brand", peer="p", spec=SPEC, state=state)

    assert [j.job_id for j in store.unfinished()] == ["a", "c"]
    assert [j.job_id for j in store.recent(limit=2)] == ["c", "b"]


def test_an_incoming_sequence_number_is_accepted_once(store: SqlJobStore) -> None:
    store.create("j1", side="partner", peer="brand", spec=SPEC, state=JobState.APPROVED)
    kw = {"sender": "f" * 64, "direction": "in", "kind": "proposal", "sha256": "0" * 64}
    store.record_message("j1", seq=0, **kw)
    store.record_message("j1", seq=2, **kw)

    for seq in (0, 1, 2):
        with pytest.raises(ReplayedMessage):
            store.record_message("j1", seq=seq, **kw)
    store.record_message("j1", seq=0, **(kw | {"direction": "out"}))
    assert store.next_seq("j1", "f" * 64) == 1
    assert [m["seq"] for m in store.messages("j1")] == [0, 2, 0]


def test_unsupported_database_urls_are_refused() -> None:
    with pytest.raises(NodeConfigError):
        SqlJobStore.open("mysql://x@localhost/db")
    with pytest.raises(NodeConfigError):
        SqlJobStore.open("not a url")
