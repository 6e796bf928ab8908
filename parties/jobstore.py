"""A node's job records: jobs, their audit events, and the envelopes exchanged for them.

SQLAlchemy Core over a SQLite file in the node home by default, PostgreSQL in production; the
schema comes from this package's Alembic migrations (version table ``parties_alembic_version``,
so the consent ledger may share the database). A job's state only moves forward and never leaves
a terminal state (``rejected``, ``completed``, ``failed``); a restarted node reads the jobs that
had not ended from here (:meth:`SqlJobStore.unfinished`).

Incoming envelopes are recorded by ``(job, sender, seq)``: a second envelope with a sequence
number not above the last one recorded is a replay, whichever process of the node receives it.
Nothing stored here is a raw identifier, a key or a table row: specs name datasets, events hold
counts, digests and reasons.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError

from parties.errors import JobStateError, NodeConfigError, ReplayedMessage, UnknownJob

__all__ = [
    "DEFAULT_DB_NAME",
    "JobRecord",
    "JobState",
    "SqlJobStore",
    "default_url",
    "make_engine",
    "migrate",
]

DEFAULT_DB_NAME = "node.sqlite3"

metadata = MetaData()
jobs = Table(
    "node_jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("side", String(16), nullable=False),
    Column("peer", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("purpose", String(128), nullable=False),
    Column("spec", Text, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("reason", Text, nullable=False),
    Column("progress", Float, nullable=False),
    Column("metrics", Text, nullable=False),
    Column("outputs", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)
job_events = Table(
    "node_job_events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("node_jobs.job_id"), nullable=False, index=True),
    Column("at", String(40), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
)
messages = Table(
    "node_messages",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("sender", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("direction", String(8), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("at", String(40), nullable=False),
)


class JobState(StrEnum):
    """Where a job is. Brand: proposed → approved|rejected → running → completed|failed."""

    PROPOSED = "proposed"
    APPROVED = "approved"
    REJECTED = "rejected"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change."""
        return self in (JobState.REJECTED, JobState.COMPLETED, JobState.FAILED)


_NEXT: dict[JobState, frozenset[JobState]] = {
    JobState.PROPOSED: frozenset({JobState.APPROVED, JobState.REJECTED, JobState.FAILED}),
    JobState.APPROVED: frozenset({JobState.RUNNING, JobState.COMPLETED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.COMPLETED, JobState.FAILED}),
    JobState.REJECTED: frozenset(),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
}


@dataclass(frozen=True)
class JobRecord:
    """One job as this node sees it (``side``: the role this node plays in it)."""

    job_id: str
    side: str
    peer: str
    kind: str
    purpose: str
    spec: dict[str, Any]
    state: JobState
    reason: str
    progress: float
    metrics: dict[str, Any]
    outputs: dict[str, Any]
    created_at: str
    updated_at: str


def default_url(home: Path) -> str:
    """The default job database: a SQLite file in the node home."""
    return f"sqlite:///{(home / DEFAULT_DB_NAME).resolve()}"


def make_engine(url: str) -> Engine:
    """An engine for the job store (``postgresql://`` URLs use psycopg 3).

    Raises:
        NodeConfigError: the URL is not a SQLite or PostgreSQL SQLAlchemy URL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise NodeConfigError("database url is not a SQLAlchemy URL") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if backend == "postgresql":
        return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)
    raise NodeConfigError("database url must be sqlite:// or postgresql://")


def migrate(engine: Engine) -> None:
    """Bring the job tables to the newest Alembic revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    here = Path(__file__).parent / "migrations"
    cfg.set_main_option("script_location", str(here))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(here / "versions"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(275604912)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _now() -> datetime:
    return datetime.now(UTC)


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class SqlJobStore:
    """Jobs, audit events and exchanged envelopes of one node."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _now) -> None:
        self.engine = engine
        self.clock = clock

    @classmethod
    def open(cls, url: str, clock: Callable[[], datetime] = _now) -> SqlJobStore:
        """Open (and migrate) the store at ``url``.

        Raises:
            NodeConfigError: the URL is not a supported database URL.
        """
        engine = make_engine(url)
        migrate(engine)
        return cls(engine, clock)

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    def _stamp(self) -> str:
        return self.clock().isoformat()

    # -- jobs ----------------------------------------------------------------------------------

    def create(
        self, job_id: str, *, side: str, peer: str, spec: Mapping[str, Any], state: JobState
    ) -> JobRecord:
        """Record a new job.

        Raises:
            ReplayedMessage: a job with this id already exists (a repeated proposal).
        """
        now = self._stamp()
        row = {
            "job_id": job_id,
            "side": side,
            "peer": peer,
            "kind": str(spec.get("kind", "")),
            "purpose": str(spec.get("purpose", "")),
            "spec": _dumps(spec),
            "state": state.value,
            "reason": "",
            "progress": 0.0,
            "metrics": "{}",
            "outputs": "{}",
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(jobs).values(**row))
                conn.execute(
                    insert(job_events).values(
                        job_id=job_id, at=now, kind="state", detail=_dumps({"state": state.value})
                    )
                )
        except IntegrityError:
            raise ReplayedMessage(f"job {job_id!r} already exists on this node") from None
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        """One job.

        Raises:
            UnknownJob: no job with that id.
        """
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
        if row is None:
            raise UnknownJob(f"no job {job_id!r} on this node")
        return _record(row)

    def find(self, job_id: str) -> JobRecord | None:
        """One job, or None."""
        try:
            return self.get(job_id)
        except UnknownJob:
            return None

    def recent(self, *, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Jobs, newest first."""
        query = (
            select(jobs)
            .order_by(jobs.c.created_at.desc(), jobs.c.job_id)
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query).mappings()]

    def approved_for(
        self, peer: str, *, since: str | None = None, kind: str | None = None
    ) -> list[JobRecord]:
        """Jobs this node approved for ``peer`` (as the partner), whatever became of them.

        ``since``: created at or after this ISO timestamp; ``kind``: of this job kind.
        """
        ran = [s.value for s in (JobState.APPROVED, JobState.RUNNING, JobState.COMPLETED,
                                 JobState.FAILED)]  # fmt: skip
        query = select(jobs).where(
            jobs.c.side == "partner", jobs.c.peer == peer, jobs.c.state.in_(ran)
        )
        if since is not None:
            query = query.where(jobs.c.created_at >= since)
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query).mappings()]

    def unfinished(self) -> list[JobRecord]:
        """Jobs that had not ended (what a restarted node must settle)."""
        terminal = [s.value for s in JobState if s.terminal]
        query = select(jobs).where(jobs.c.state.not_in(terminal)).order_by(jobs.c.created_at)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query).mappings()]

    def update(
        self,
        job_id: str,
        *,
        state: JobState | None = None,
        reason: str | None = None,
        progress: float | None = None,
        metrics: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
    ) -> JobRecord:
        """Move a job forward and/or record its progress, metrics or outputs.

        Raises:
            UnknownJob: no job with that id.
            JobStateError: the job already ended, or the transition goes backwards.
        """
        now = self._stamp()
        with self.engine.begin() as conn:
            query = select(jobs.c.state).where(jobs.c.job_id == job_id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            current = conn.execute(query).scalar_one_or_none()
            if current is None:
                raise UnknownJob(f"no job {job_id!r} on this node")
            old = JobState(current)
            if old.terminal:
                raise JobStateError(f"job {job_id!r} already ended ({old.value})")
            values: dict[str, Any] = {"updated_at": now}
            if state is not None and state is not old:
                if state not in _NEXT[old]:
                    raise JobStateError(f"job {job_id!r} cannot go from {old.value} to {state}")
                values["state"] = state.value
                detail: dict[str, Any] = {"state": state.value}
                if reason:
                    detail["reason"] = reason
                conn.execute(
                    insert(job_events).values(
                        job_id=job_id, at=now, kind="state", detail=_dumps(detail)
                    )
                )
            if reason is not None:
                values["reason"] = reason
            if progress is not None:
                values["progress"] = max(0.0, min(1.0, float(progress)))
            if metrics is not None:
                values["metrics"] = _dumps(metrics)
            if outputs is not None:
                values["outputs"] = _dumps(outputs)
            conn.execute(update(jobs).where(jobs.c.job_id == job_id).values(**values))
        return self.get(job_id)

    # -- audit ---------------------------------------------------------------------------------

    def add_event(self, job_id: str, kind: str, detail: Mapping[str, Any]) -> None:
        """Append an audit event (counts, digests, decisions; never rows or identifiers).

        Raises:
            UnknownJob: no job with that id.
        """
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(job_events).values(
                        job_id=job_id, at=self._stamp(), kind=kind, detail=_dumps(detail)
                    )
                )
        except IntegrityError:
            raise UnknownJob(f"no job {job_id!r} on this node") from None

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """A job's audit events in the order they happened."""
        query = (
            select(job_events.c.at, job_events.c.kind, job_events.c.detail)
            .where(job_events.c.job_id == job_id)
            .order_by(job_events.c.event_id)
        )
        with self.engine.connect() as conn:
            return [
                {"at": at, "kind": kind, "detail": json.loads(detail)}
                for at, kind, detail in conn.execute(query)
            ]

    def record_message(
        self, job_id: str, *, sender: str, seq: int, direction: str, kind: str, sha256: str
    ) -> None:
        """Remember an envelope sent (``out``) or accepted (``in``).

        Raises:
            ReplayedMessage: an incoming sequence number not above the last one recorded.
        """
        with self.engine.begin() as conn:
            last = conn.execute(
                select(func.max(messages.c.seq)).where(
                    messages.c.job_id == job_id,
                    messages.c.sender == sender,
                    messages.c.direction == direction,
                )
            ).scalar_one_or_none()
            if last is not None and seq <= last:
                raise ReplayedMessage(f"sequence {seq} already seen for job {job_id!r}")
            try:
                conn.execute(
                    insert(messages).values(
                        job_id=job_id,
                        sender=sender,
                        seq=seq,
                        direction=direction,
                        kind=kind,
                        sha256=sha256,
                        at=self._stamp(),
                    )
                )
            except IntegrityError:
                raise ReplayedMessage(f"sequence {seq} already seen for job {job_id!r}") from None

    def next_seq(self, job_id: str, sender: str) -> int:
        """The next sequence number this node uses for its envelopes of a job."""
        query = select(func.max(messages.c.seq)).where(
            messages.c.job_id == job_id,
            messages.c.sender == sender,
            messages.c.direction == "out",
        )
        with self.engine.connect() as conn:
            last = conn.execute(query).scalar_one_or_none()
        return 0 if last is None else int(last) + 1

    def messages(self, job_id: str) -> list[dict[str, Any]]:
        """Digests of the envelopes exchanged for a job, in order."""
        query = (
            select(
                messages.c.direction,
                messages.c.sender,
                messages.c.seq,
                messages.c.kind,
                messages.c.sha256,
                messages.c.at,
            )
            .where(messages.c.job_id == job_id)
            .order_by(messages.c.at, messages.c.direction, messages.c.seq)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]


def _record(row: RowMapping) -> JobRecord:
    return JobRecord(
        job_id=row["job_id"],
        side=row["side"],
        peer=row["peer"],
        kind=row["kind"],
        purpose=row["purpose"],
        spec=json.loads(row["spec"]),
        state=JobState(row["state"]),
        reason=row["reason"],
        progress=float(row["progress"]),
        metrics=json.loads(row["metrics"]),
        outputs=json.loads(row["outputs"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
