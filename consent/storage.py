"""Where the ledger lives: SQLAlchemy engines, Alembic migration, and :class:`SqlLedgerStore`.

SQLite is the embedded default, PostgreSQL the production database. The store keeps entries,
Merkle nodes, tree heads and projections.

Appends are serialized: a writer takes ``BEGIN IMMEDIATE`` on SQLite and ``SELECT … FOR UPDATE``
on the single ``consent_ledger`` row on PostgreSQL, so two processes appending at once produce one
log. Reads page through the log by position and never hold the whole ledger in memory.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from consent.errors import (
    ConsentError,
    ConsentInputError,
    DuplicateEventError,
    LedgerBusyError,
)
from consent.keys import LedgerKeys
from consent.merkle import EMPTY_ROOT, Frontier
from consent.model import (
    STATE_AFTER,
    Action,
    ConsentEvent,
    Draft,
    Recipient,
    canonical_json,
    draft_of,
    format_time,
    from_micros,
    to_micros,
)
from consent.tables import (
    contacts,
    entries,
    ledger,
    nodes,
    preferences,
    recipients,
    state,
    subjects,
    tree_heads,
)
from consent.tree_head import SignedTreeHead

DEFAULT_DB_NAME = "consent.sqlite3"
#: SQLite page cache of every connection (KiB).
_CACHE_KIB = 65_536
#: SQLite page cache while appending (KiB): a large import inserts into the subject, state and
#: event-id B-trees at random places, and at a million entries those trees outgrow 64 MiB (1M
#: events: 124.7 s with 512 MiB against 150.5 s with 64 MiB, same file). A fixed cap, given back
#: when the append ends.
_APPEND_CACHE_KIB = 524_288
_T = TypeVar("_T")
_CHUNK = 5_000


def default_url(home: Path) -> str:
    """Return the default ledger URL: a SQLite file in the node home."""
    return f"sqlite:///{(home / DEFAULT_DB_NAME).resolve()}"


def normalize_url(url: str) -> URL:
    """Parse a SQLAlchemy URL, choosing psycopg 3 for plain ``postgresql://`` URLs.

    Raises:
        ConsentInputError: the URL cannot be parsed or names an unsupported database.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConsentInputError("is not a SQLAlchemy database URL", field="db") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConsentInputError("must be a sqlite:// or postgresql:// URL", field="db")
    return parsed


def make_engine(url: str, *, busy_timeout: float = 60.0) -> Engine:
    """Create an engine for the ledger with the settings appends rely on.

    SQLite: WAL journal, ``synchronous=NORMAL`` (durable across process crashes), a 60 s busy
    timeout, and ``BEGIN IMMEDIATE`` for writers. PostgreSQL: psycopg 3, pre-ping.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed, connect_args={"timeout": busy_timeout, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = "IMMEDIATE" if conn.get_execution_options().get("pec_write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent, safe to race)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    here = Path(__file__).parent / "migrations"
    cfg.set_main_option("script_location", str(here))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(here / "versions"))
    with engine.connect().execution_options(pec_write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            # Two processes creating the schema at once would collide on CREATE TABLE.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(275604911)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: entries added, duplicates skipped, and the new signed tree head."""

    appended: int
    skipped: int
    tree_head: SignedTreeHead | None
    first_seq: int | None = None


@dataclass(frozen=True, slots=True)
class CohortView:
    """A cohort's inputs read in one transaction (see :meth:`SqlLedgerStore.cohort_view`).

    ``counts`` classifies every subject with a record for the purpose by its record for the
    recipient as the projection holds it now, by exclusion reason (``other_recipient`` when it
    has none); a given, unexpired record counts as ``categories_not_covered`` until the subject
    appears in ``eligible_pages``, which streams the eligible subject keys ascending.
    ``late_rows`` streams, by subject and recipient, every projection row of the subjects that
    have a row newer than the cut (``(subject_key, recipient, state, categories,
    valid_until_us, explicit, occurred_us, seq)``); the caller recomputes their verdicts.
    """

    head: SignedTreeHead | None
    known: int
    subjects_with_records: int
    counts: dict[str, int]
    eligible_pages: Iterator[list[str]]
    late_rows: Iterator[list[tuple[Any, ...]]]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One ledger entry as stored."""

    seq: int
    payload: str
    content_hash: bytes
    columns: dict[str, Any]

    def leaf_data(self) -> bytes:
        """The bytes hashed into the Merkle leaf."""
        return self.payload.encode("utf-8")


class LedgerStore(Protocol):
    """The storage a :class:`consent.ledger.ConsentLedger` needs."""

    def append(
        self,
        items: Iterable[tuple[int, ConsentEvent]],
        keys: LedgerKeys,
        now: Callable[[], datetime],
        *,
        source: str,
    ) -> AppendResult:
        """Append events atomically; skip exact duplicates; sign a tree head."""
        ...

    def size(self) -> int:
        """Number of entries."""
        ...


def leaf_payload(seq: int, recorded_at: datetime, ev: ConsentEvent) -> str:
    """Return the leaf data of an entry: canonical JSON of position, time and event content."""
    body = {"seq": seq, "recorded_at": format_time(recorded_at), "event": ev.content()}
    return canonical_json(body).decode("utf-8")


def _payload_from_content(seq: int, recorded: str, content_json: str) -> str:
    # Same bytes as leaf_payload (keys in sorted order: event, recorded_at, seq), without
    # serializing the event twice; a test pins the equality.
    return f'{{"event":{content_json},"recorded_at":"{recorded}","seq":{seq}}}'


_STATE_OF = {a.value: s.value for a, s in STATE_AFTER.items()}

ENTRY_COLUMNS = _ENTRY_COLS = (
    "seq",
    "event_id",
    "content_hash",
    "payload",
    "subject_key",
    "action",
    "purpose",
    "recipient",
    "categories",
    "occurred_us",
    "valid_until_us",
    "explicit",
)
_NODE_COLS = ("level", "idx", "hash")


def _bulk_insert(
    conn: Connection, table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """Insert many rows through the driver: COPY on PostgreSQL, executemany on SQLite."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        return
    marks = ", ".join("?" for _ in cols)
    conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)


class SqlLedgerStore:
    """Ledger storage on a SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(pec_write=True)

    @classmethod
    def open(cls, url: str, *, create: bool = True, busy_timeout: float = 60.0) -> SqlLedgerStore:
        """Open (and by default migrate) the ledger at ``url``.

        ``busy_timeout`` is how long a SQLite writer waits for another one before
        :class:`LedgerBusyError`.
        """
        engine = make_engine(url, busy_timeout=busy_timeout)
        if create:
            migrate(engine)
        return cls(engine)

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    # -- writing -------------------------------------------------------------------------------

    def append(
        self,
        items: Iterable[tuple[int, ConsentEvent]],
        keys: LedgerKeys,
        now: Callable[[], datetime],
        *,
        source: str,
    ) -> AppendResult:
        """Append events in one transaction; all or nothing.

        ``items`` yields ``(row, event)``; an exception raised while iterating (for example a
        :class:`ConsentInputError` for a bad row) rolls the whole append back. An event whose
        ``event_id`` is already recorded with the same content is skipped; with other content it
        is an error.

        Raises:
            DuplicateEventError: an ``event_id`` reused with different content.
        """
        try:
            return self._append(items, keys, now, source=source)
        except OperationalError as exc:
            if "locked" in str(exc.orig).lower():
                raise LedgerBusyError("the ledger is locked by another writer; retry") from None
            raise

    def _append(
        self,
        items: Iterable[tuple[int, ConsentEvent]],
        keys: LedgerKeys,
        now: Callable[[], datetime],
        *,
        source: str,
    ) -> AppendResult:
        def batches() -> Iterator[list[Draft]]:
            batch: list[Draft] = []
            for row, ev in items:
                batch.append(draft_of(row, ev))
                if len(batch) >= _CHUNK:
                    yield batch
                    batch = []
            if batch:
                yield batch

        return self._append_drafts(batches(), keys, now, source=source)

    def append_drafts(
        self,
        batches: Iterable[list[Draft]],
        keys: LedgerKeys,
        now: Callable[[], datetime],
        *,
        source: str,
    ) -> AppendResult:
        """Append events already turned into :data:`Draft` rows, in batches; as :meth:`append`.

        Raises:
            DuplicateEventError: an ``event_id`` reused with different content.
        """
        try:
            return self._append_drafts(batches, keys, now, source=source)
        except OperationalError as exc:
            if "locked" in str(exc.orig).lower():
                raise LedgerBusyError("the ledger is locked by another writer; retry") from None
            raise

    def _append_drafts(
        self,
        batches: Iterable[list[Draft]],
        keys: LedgerKeys,
        now: Callable[[], datetime],
        *,
        source: str,
    ) -> AppendResult:
        appended = skipped = 0
        first_seq: int | None = None
        head: SignedTreeHead | None = None
        with self._writer.begin() as conn:
            size = conn.execute(
                select(ledger.c.size).where(ledger.c.id == 1).with_for_update()
            ).scalar_one()
            frontier = Frontier.from_perfect(size, lambda lv, ix: self._perfect(conn, lv, ix))
            recorded = format_time(now())
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                conn.exec_driver_sql(f"PRAGMA cache_size=-{_APPEND_CACHE_KIB}")
            try:
                for batch in batches:
                    for start in range(0, len(batch), _CHUNK):
                        a, s = self._append_chunk(
                            conn, batch[start : start + _CHUNK], frontier, recorded, source
                        )
                        appended, skipped = appended + a, skipped + s
            finally:
                if sqlite:
                    conn.exec_driver_sql(f"PRAGMA cache_size=-{_CACHE_KIB}")
            if appended:
                first_seq = size
                head = SignedTreeHead.sign(frontier.size, frontier.root(), now(), keys)
                conn.execute(
                    insert(tree_heads).values(
                        tree_size=head.tree_size,
                        root_hash=head.root_hash,
                        issued_us=to_micros(head.timestamp),
                        key_id=head.key_id,
                        signature=head.signature,
                    )
                )
                conn.execute(update(ledger).where(ledger.c.id == 1).values(size=frontier.size))
        return AppendResult(appended, skipped, head, first_seq)

    @staticmethod
    def _known_hashes(conn: Connection, ids: list[str]) -> dict[str, bytes]:
        """Content hashes of the event ids already recorded, in one statement."""
        raw: Any = conn.connection.driver_connection
        cur = raw.cursor()
        try:
            if conn.dialect.name == "postgresql":
                cur.execute(
                    "SELECT event_id, content_hash FROM consent_entries WHERE event_id = ANY(%s)",
                    (ids,),
                )
            else:
                cur.execute(
                    "SELECT event_id, content_hash FROM consent_entries "
                    "WHERE event_id IN (SELECT value FROM json_each(?))",
                    (json.dumps(ids),),
                )
            return {str(eid): bytes(h) for eid, h in cur.fetchall()}
        finally:
            cur.close()

    def _append_chunk(
        self,
        conn: Connection,
        batch: list[Draft],
        frontier: Frontier,
        recorded: str,
        source: str,
    ) -> tuple[int, int]:
        known = self._known_hashes(conn, [d[1] for d in batch])
        entry_rows: list[tuple[Any, ...]] = []
        node_rows: list[tuple[int, int, bytes]] = []
        latest: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        prefs: dict[tuple[str, str], tuple[Any, ...]] = {}
        first: dict[str, int] = {}
        skipped = 0
        sha256 = hashlib.sha256
        push = frontier.push
        for (
            row,
            event_id,
            content_json,
            chash,
            subject,
            action,
            purpose,
            recipient,
            categories,
            occurred,
            valid_until,
            explicit,
            legal_basis,
            pref,
        ) in batch:
            seen = known.get(event_id)
            if seen is not None:
                if seen != chash:
                    raise DuplicateEventError(
                        "event_id is already recorded with different content",
                        field="event_id",
                        row=row,
                        source=source,
                    )
                skipped += 1
                continue
            known[event_id] = chash
            seq = frontier.size
            payload = _payload_from_content(seq, recorded, content_json)
            leaf = sha256(b"\x00" + payload.encode("utf-8")).digest()
            entry_rows.append(
                (
                    seq,
                    event_id,
                    chash,
                    payload,
                    subject,
                    action,
                    purpose,
                    recipient,
                    categories,
                    occurred,
                    valid_until,
                    explicit,
                )
            )
            node_rows.append((0, seq, leaf))
            push(leaf, node_rows)
            # Projections: the newest (occurred_at, seq) wins.
            if first.get(subject, occurred) >= occurred:
                first[subject] = occurred
            if pref is None:
                skey = (subject, purpose, recipient)
                cur = latest.get(skey)
                if cur is None or (cur[8], cur[9]) < (occurred, seq):
                    latest[skey] = (
                        subject,
                        purpose,
                        recipient,
                        _STATE_OF[action],
                        categories,
                        valid_until,
                        explicit,
                        legal_basis,
                        occurred,
                        seq,
                    )
            else:
                pkey = (subject, pref[0])
                curp = prefs.get(pkey)
                if curp is None or (curp[8], curp[9]) < (occurred, seq):
                    prefs[pkey] = (subject, *pref, occurred, seq)
        if entry_rows:
            _bulk_insert(conn, "consent_entries", _ENTRY_COLS, entry_rows)
            _bulk_insert(conn, "consent_nodes", _NODE_COLS, node_rows)
            self._write_projections(conn, latest, prefs, first)
        return len(entry_rows), skipped

    def _project(self, conn: Connection, fresh: list[tuple[int, ConsentEvent]]) -> None:
        """Fold events into the projections; newest (occurred_at, seq) wins."""
        latest: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        prefs: dict[tuple[str, str], tuple[Any, ...]] = {}
        first: dict[str, int] = {}
        for seq, ev in fresh:
            d = draft_of(0, ev)
            subject, purpose, recipient, occurred, pref = d[4], d[6], d[7], d[9], d[13]
            if first.get(subject, occurred) >= occurred:
                first[subject] = occurred
            if pref is None:
                skey = (subject, purpose, recipient)
                cur = latest.get(skey)
                if cur is None or (cur[8], cur[9]) < (occurred, seq):
                    latest[skey] = (
                        subject,
                        purpose,
                        recipient,
                        _STATE_OF[d[5]],
                        d[8],
                        d[10],
                        d[11],
                        d[12],
                        occurred,
                        seq,
                    )
            else:
                pkey = (subject, pref[0])
                curp = prefs.get(pkey)
                if curp is None or (curp[8], curp[9]) < (occurred, seq):
                    prefs[pkey] = (subject, *pref, occurred, seq)
        self._write_projections(conn, latest, prefs, first)

    def _write_projections(
        self,
        conn: Connection,
        latest: dict[tuple[str, str, str], tuple[Any, ...]],
        prefs: dict[tuple[str, str], tuple[Any, ...]],
        first: dict[str, int],
    ) -> None:
        # Sorted by key: index pages are then visited in order, not at random.
        self._upsert(conn, state, ["subject_key", "purpose", "recipient"], sorted(latest.values()))
        self._upsert(conn, preferences, ["subject_key", "channel"], sorted(prefs.values()))
        if not first:
            return
        upsert = (
            "ON CONFLICT (subject_key) DO UPDATE "
            "SET first_occurred_us = excluded.first_occurred_us "
            "WHERE excluded.first_occurred_us < consent_subjects.first_occurred_us"
        )
        if conn.dialect.name == "postgresql":
            # COPY into a transaction-local staging table, then one set-based upsert.
            conn.exec_driver_sql(
                "CREATE TEMP TABLE IF NOT EXISTS consent_subjects_stage "
                "(LIKE consent_subjects) ON COMMIT DELETE ROWS"
            )
            _bulk_insert(
                conn,
                "consent_subjects_stage",
                ("subject_key", "first_occurred_us"),
                sorted(first.items()),
            )
            conn.exec_driver_sql(
                "INSERT INTO consent_subjects SELECT * FROM consent_subjects_stage " + upsert
            )
            conn.exec_driver_sql("DELETE FROM consent_subjects_stage")
            return
        conn.exec_driver_sql(
            "INSERT INTO consent_subjects (subject_key, first_occurred_us) VALUES (?, ?) " + upsert,
            sorted(first.items()),
        )

    def _upsert(
        self, conn: Connection, table: Any, keys: list[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """Insert or replace projection rows (column-order tuples); newer (occurred, seq) wins."""
        if not rows:
            return
        cols = [c.name for c in table.c]
        tuples = rows
        if conn.dialect.name == "postgresql":
            # COPY into a transaction-local staging table, then one set-based upsert.
            stage = f"{table.name}_stage"
            conn.exec_driver_sql(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table.name}) ON COMMIT DELETE ROWS"
            )
            _bulk_insert(conn, stage, tuple(cols), tuples)
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in keys)
            conn.exec_driver_sql(
                f"INSERT INTO {table.name} SELECT * FROM {stage} "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
                f"WHERE ({table.name}.occurred_us, {table.name}.seq) "
                "< (excluded.occurred_us, excluded.seq)"
            )
            conn.exec_driver_sql(f"DELETE FROM {stage}")
            return
        mark = "?"
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in keys)
        sql = (
            f"INSERT INTO {table.name} ({', '.join(cols)}) "
            f"VALUES ({', '.join(mark for _ in cols)}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
            f"WHERE ({table.name}.occurred_us, {table.name}.seq) "
            "< (excluded.occurred_us, excluded.seq)"
        )
        conn.exec_driver_sql(sql, tuples)

    def rebuild_projections(self) -> int:
        """Drop and rebuild the projections from the log; return the entries replayed."""
        replayed = 0
        with self._writer.begin() as conn:
            size = conn.execute(
                select(ledger.c.size).where(ledger.c.id == 1).with_for_update()
            ).scalar_one()
            conn.execute(delete(state))
            conn.execute(delete(preferences))
            conn.execute(delete(subjects))
            start = 0
            while start < size:
                rows = conn.execute(
                    select(entries.c.seq, entries.c.payload)
                    .where(entries.c.seq >= start, entries.c.seq < min(size, start + 10_000))
                    .order_by(entries.c.seq)
                ).all()
                fresh = [
                    (r.seq, ConsentEvent.from_content(json.loads(r.payload)["event"])) for r in rows
                ]
                self._project(conn, fresh)
                replayed += len(fresh)
                start += 10_000
        return replayed

    def put_recipient(self, r: Recipient, at: datetime) -> None:
        """Insert or replace a recipient record."""
        row = (
            r.recipient_id,
            r.name,
            r.contact,
            ";".join(r.purposes),
            r.processing_method,
            ";".join(r.data_categories),
            to_micros(at),
        )
        mark = "%s" if self.dialect == "postgresql" else "?"
        with self._writer.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO consent_recipients (recipient_id, name, contact, purposes, "
                "processing_method, data_categories, updated_us) "
                f"VALUES ({', '.join([mark] * 7)}) ON CONFLICT (recipient_id) DO UPDATE SET "
                "name = excluded.name, contact = excluded.contact, purposes = excluded.purposes, "
                "processing_method = excluded.processing_method, "
                "data_categories = excluded.data_categories, updated_us = excluded.updated_us",
                row,
            )

    def recipients(self) -> list[Recipient]:
        """All registered recipients, by id."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(recipients).order_by(recipients.c.recipient_id)).all()
        return [
            Recipient(
                recipient_id=str(r.recipient_id),
                name=str(r.name),
                contact=str(r.contact),
                purposes=tuple(p for p in str(r.purposes).split(";") if p),
                processing_method=str(r.processing_method),
                data_categories=tuple(c for c in str(r.data_categories).split(";") if c),
            )
            for r in rows
        ]

    def record_contact(self, subject_key: str, channel: str, topic: str, at: datetime) -> None:
        """Record that a subject was contacted (feeds frequency caps)."""
        with self._writer.begin() as conn:
            conn.execute(
                insert(contacts).values(
                    subject_key=subject_key,
                    channel=channel,
                    topic=topic,
                    contacted_us=to_micros(at),
                )
            )

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _perfect(conn: Connection, level: int, idx: int) -> bytes:
        value = conn.execute(
            select(nodes.c.hash).where(nodes.c.level == level, nodes.c.idx == idx)
        ).scalar_one_or_none()
        if value is None:
            raise ConsentError(f"Merkle node ({level}, {idx}) is missing from storage")
        return bytes(value)

    def with_nodes(
        self,
        compute: Callable[[Callable[[int, int], bytes]], _T],
        extra: Iterable[tuple[int, int]] = (),
    ) -> _T:
        """Run a proof computation with all the node hashes it needs fetched in one query.

        ``compute`` is called twice: first with a recorder (whose answers are placeholders; proof
        shapes do not depend on hash values), then with the fetched hashes.
        """
        wanted: set[tuple[int, int]] = set(extra)

        def record(level: int, idx: int) -> bytes:
            wanted.add((level, idx))
            return bytes(32)

        compute(record)
        found: dict[tuple[int, int], bytes] = {}
        by_level: dict[int, list[int]] = {}
        for level, idx in wanted:
            by_level.setdefault(level, []).append(idx)
        if by_level:
            # One statement through the driver; per-level IN lists keep the primary-key index
            # usable on SQLite. Values are integers we computed, passed as parameters.
            mark = "%s" if self.dialect == "postgresql" else "?"
            clauses, params = [], []
            for lv, ix in by_level.items():
                clauses.append(f"(level = {mark} AND idx IN ({', '.join([mark] * len(ix))}))")
                params += [lv, *ix]
            sql = f"SELECT level, idx, hash FROM consent_nodes WHERE {' OR '.join(clauses)}"
            with self.engine.connect() as conn:
                raw: Any = conn.connection.driver_connection
                cur = raw.cursor()
                try:
                    cur.execute(sql, params)
                    found.update({(lv, ix): bytes(h) for lv, ix, h in cur.fetchall()})
                finally:
                    cur.close()

        def lookup(level: int, idx: int) -> bytes:
            h = found.get((level, idx))
            if h is None:
                raise ConsentError(f"Merkle node ({level}, {idx}) is missing from storage")
            return h

        return compute(lookup)

    def perfect(self, level: int, idx: int) -> bytes:
        """Return a stored complete-subtree hash (level 0: a leaf hash)."""
        with self.engine.connect() as conn:
            return self._perfect(conn, level, idx)

    def perfect_reader(self, conn: Connection) -> Callable[[int, int], bytes]:
        """Return a :data:`consent.merkle.PerfectSubtree` bound to an open connection."""
        return lambda level, idx: self._perfect(conn, level, idx)

    def size(self) -> int:
        """Number of entries recorded (as the ledger row says)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(ledger.c.size).where(ledger.c.id == 1)).scalar_one())

    def count_entries(self) -> int:
        """Number of entry rows actually present."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(entries)).scalar_one())

    @staticmethod
    def _head(row: Any) -> SignedTreeHead:
        return SignedTreeHead(
            tree_size=int(row.tree_size),
            root_hash=bytes(row.root_hash),
            timestamp=from_micros(int(row.issued_us)),
            key_id=str(row.key_id),
            signature=bytes(row.signature),
        )

    def latest_tree_head(self) -> SignedTreeHead | None:
        """The signed tree head of the largest size, or ``None`` for an empty ledger."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(tree_heads).order_by(tree_heads.c.tree_size.desc()).limit(1)
            ).first()
        return self._head(row) if row is not None else None

    def tree_head(self, tree_size: int) -> SignedTreeHead | None:
        """The signed tree head of exactly ``tree_size`` entries, if one was issued."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(tree_heads).where(tree_heads.c.tree_size == tree_size)
            ).first()
        return self._head(row) if row is not None else None

    def iter_tree_heads(self) -> Iterator[SignedTreeHead]:
        """All signed tree heads by increasing size, paged."""
        last = -1
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(tree_heads)
                    .where(tree_heads.c.tree_size > last)
                    .order_by(tree_heads.c.tree_size)
                    .limit(5_000)
                ).all()
            if not rows:
                return
            for row in rows:
                yield self._head(row)
            last = int(rows[-1].tree_size)

    def iter_entries(
        self, start: int = 0, end: int | None = None, page: int = 20_000
    ) -> Iterator[StoredEntry]:
        """Entries with ``start <= seq < end`` in order, read a page at a time."""
        cursor = start
        while end is None or cursor < end:
            cond = [entries.c.seq >= cursor]
            if end is not None:
                cond.append(entries.c.seq < end)
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(entries).where(*cond).order_by(entries.c.seq).limit(page)
                ).all()
            if not rows:
                return
            for r in rows:
                cols = dict(r._mapping)
                yield StoredEntry(
                    seq=int(r.seq),
                    payload=str(r.payload),
                    content_hash=bytes(r.content_hash),
                    columns=cols,
                )
            cursor = int(rows[-1].seq) + 1

    def iter_entry_pages(
        self, page: int = 20_000, start: int = 0, end: int | None = None
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Yield all entries in log order as raw tuples, a page at a time.

        Columns are in ``ENTRY_COLUMNS`` order; rows are read through the driver (the verifier's
        fast path).
        """
        if self.dialect == "postgresql":
            # Measured: on PostgreSQL the Core path verifies faster (300k entries: 9.9 s vs
            # 12-13 s through the raw driver; 1M: 31 s vs 89 s); on SQLite the driver path wins.
            yield from self._iter_entry_pages_core(page, start, end)
            return
        mark = "?"
        sql = (
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM consent_entries "
            f"WHERE seq >= {mark} AND seq < {mark} ORDER BY seq LIMIT {mark}"
        )
        cursor_pos = start
        stop = end if end is not None else 2**62
        while True:
            with self.engine.connect() as conn:
                raw: Any = conn.connection.driver_connection
                cur = raw.cursor()
                try:
                    cur.execute(sql, (cursor_pos, stop, page))
                    rows = cur.fetchall()
                finally:
                    cur.close()
            if not rows:
                return
            yield rows
            cursor_pos = int(rows[-1][0]) + 1

    def _iter_entry_pages_core(
        self, page: int, start: int, end: int | None
    ) -> Iterator[list[tuple[Any, ...]]]:
        cols = [entries.c[name] for name in ENTRY_COLUMNS]
        cursor_pos = start
        while True:
            cond = [entries.c.seq >= cursor_pos]
            if end is not None:
                cond.append(entries.c.seq < end)
            with self.engine.connect() as conn:
                rows = [
                    tuple(r)
                    for r in conn.execute(
                        select(*cols).where(*cond).order_by(entries.c.seq).limit(page)
                    )
                ]
            if not rows:
                return
            yield rows
            cursor_pos = int(rows[-1][0]) + 1

    def tree_heads_between(self, low: int, high: int) -> list[SignedTreeHead]:
        """Signed tree heads with ``low < tree_size <= high``, by size."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(tree_heads)
                .where(tree_heads.c.tree_size > low, tree_heads.c.tree_size <= high)
                .order_by(tree_heads.c.tree_size)
            ).all()
        return [self._head(r) for r in rows]

    def entries_end(self) -> int:
        """One past the largest entry position present (0 when there is none)."""
        with self.engine.connect() as conn:
            top = conn.execute(select(func.max(entries.c.seq))).scalar_one_or_none()
        return 0 if top is None else int(top) + 1

    def url(self) -> str:
        """The engine URL with its password (for worker processes of this node)."""
        return self.engine.url.render_as_string(hide_password=False)

    def nodes_ending_in(self, start: int, end: int) -> dict[tuple[int, int], bytes]:
        """Stored nodes whose last leaf lies in ``[start, end)``, one range query per level."""
        out: dict[tuple[int, int], bytes] = {}
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                for level in range(max(end, 1).bit_length()):
                    lo = ((start + 1) + (1 << level) - 1 >> level) - 1
                    hi = (end >> level) - 1
                    if hi < lo:
                        continue
                    rows = conn.execute(
                        select(nodes.c.idx, nodes.c.hash).where(
                            nodes.c.level == level, nodes.c.idx >= lo, nodes.c.idx <= hi
                        )
                    )
                    out.update({(level, int(r[0])): bytes(r[1]) for r in rows})
            return out
        mark = "?"
        sql = (
            "SELECT idx, hash FROM consent_nodes "
            f"WHERE level = {mark} AND idx BETWEEN {mark} AND {mark}"
        )
        with self.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            cur = raw.cursor()
            try:
                for level in range(max(end, 1).bit_length()):
                    # node (level, i) ends at leaf (i + 1) * 2**level - 1
                    lo = ((start + 1) + (1 << level) - 1 >> level) - 1
                    hi = (end >> level) - 1
                    if hi < lo:
                        continue
                    cur.execute(sql, (level, lo, hi))
                    out.update({(level, idx): bytes(h) for idx, h in cur.fetchall()})
            finally:
                cur.close()
        return out

    def entry(self, seq: int) -> StoredEntry | None:
        """One entry by position."""
        for e in self.iter_entries(seq, seq + 1, page=1):
            return e
        return None

    def entry_by_event_id(self, event_id: str) -> StoredEntry | None:
        """One entry by its event id."""
        with self.engine.connect() as conn:
            seq = conn.execute(
                select(entries.c.seq).where(entries.c.event_id == event_id)
            ).scalar_one_or_none()
        return self.entry(int(seq)) if seq is not None else None

    def subject_entries(self, subject_key: str, limit: int = 10_000) -> list[StoredEntry]:
        """A subject's entries in log order (at most ``limit``)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(entries)
                .where(entries.c.subject_key == subject_key)
                .order_by(entries.c.seq)
                .limit(limit)
            ).all()
        return [
            StoredEntry(int(r.seq), str(r.payload), bytes(r.content_hash), dict(r._mapping))
            for r in rows
        ]

    def state_rows(self, subject_key: str) -> list[dict[str, Any]]:
        """A subject's current-state projection rows."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(state)
                .where(state.c.subject_key == subject_key)
                .order_by(state.c.purpose, state.c.recipient)
            ).all()
        return [dict(r._mapping) for r in rows]

    def state_row(self, subject_key: str, purpose: str, recipient: str) -> dict[str, Any] | None:
        """The projection row of one (subject, purpose, recipient)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(state).where(
                    state.c.subject_key == subject_key,
                    state.c.purpose == purpose,
                    state.c.recipient == recipient,
                )
            ).first()
        return dict(row._mapping) if row is not None else None

    def projection_dump(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Both projections as sorted tuples (for tests and rebuild checks)."""
        with self.engine.connect() as conn:
            s = [tuple(r) for r in conn.execute(select(state).order_by(*state.primary_key))]
            p = [
                tuple(r)
                for r in conn.execute(select(preferences).order_by(*preferences.primary_key))
            ]
        return s, p

    def preference_row(self, subject_key: str, channel: str) -> dict[str, Any] | None:
        """The current preference of a subject for a channel."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(preferences).where(
                    preferences.c.subject_key == subject_key, preferences.c.channel == channel
                )
            ).first()
        return dict(row._mapping) if row is not None else None

    def count_contacts(self, subject_key: str, channel: str, since: datetime) -> int:
        """Contacts made with a subject on a channel since ``since``."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(contacts)
                    .where(
                        contacts.c.subject_key == subject_key,
                        contacts.c.channel == channel,
                        contacts.c.contacted_us >= to_micros(since),
                    )
                ).scalar_one()
            )

    @contextmanager
    def cohort_view(
        self,
        purpose: str,
        recipient: str,
        categories: Sequence[str],
        need_explicit: bool,
        at_us: int,
    ) -> Iterator[CohortView]:
        """Open a consistent snapshot for a cohort, classified in SQL over the projection.

        Head, known-subject count, counts and streams come from one read transaction (repeatable
        read on PostgreSQL), so they describe the same ledger state. The classification treats
        every projection row as current ("naive"); subjects with a row newer than the cut (its
        event happened after ``at`` or lies beyond the tree head) are listed in
        :attr:`CohortView.late_rows` for the caller to settle from the log. The streams are only
        valid inside the ``with`` block.
        """
        pg = self.dialect == "postgresql"
        opts: dict[str, Any] = {"isolation_level": "REPEATABLE READ"} if pg else {}
        with self.engine.connect().execution_options(**opts) as conn, conn.begin():
            row = conn.execute(
                select(tree_heads).order_by(tree_heads.c.tree_size.desc()).limit(1)
            ).first()
            head = self._head(row) if row is not None else None
            size = head.tree_size if head else 0
            known = int(
                conn.execute(
                    select(func.count())
                    .select_from(subjects)
                    .where(subjects.c.first_occurred_us <= at_us)
                ).scalar_one()
            )
            params: dict[str, Any] = {"p": purpose, "r": recipient, "at": at_us, "size": size}
            covered = []
            for i, cat in enumerate(categories):
                params[f"c{i}"] = f";{cat};"
                find = "strpos" if pg else "instr"
                covered.append(f"{find}(';' || categories || ';', :c{i}) > 0")
            if need_explicit:
                covered.append("explicit")
            ok = " AND ".join(covered) or "1 = 1"
            # One scan classifies every subject by its own record as the projection has it now
            # (subjects without one are counted once, by their smallest other recipient). Whether
            # a given, unexpired record covers the categories is left to the eligible stream.
            counts_sql = (
                "SELECT count(*) FILTER (WHERE recipient = :r AND state = 'given'"
                " AND (valid_until_us IS NULL OR valid_until_us > :at)),"
                " count(*) FILTER (WHERE recipient = :r AND (state = 'expired'"
                " OR (state = 'given' AND valid_until_us <= :at))),"
                " count(*) FILTER (WHERE recipient = :r AND state = 'refused'),"
                " count(*) FILTER (WHERE recipient = :r AND state = 'withdrawn'),"
                " count(*) FILTER (WHERE recipient = :r AND state = 'invalidated'),"
                " count(*) FILTER (WHERE recipient <> :r AND NOT EXISTS (SELECT 1"
                " FROM consent_state m WHERE m.subject_key = s.subject_key AND m.purpose = :p"
                " AND (m.recipient = :r OR m.recipient < s.recipient))),"
                " count(*) FILTER (WHERE occurred_us > :at OR seq >= :size)"
                " FROM consent_state s WHERE purpose = :p"
            )
            given, expired, refused, withdrawn, invalidated, others, late = (
                int(v) for v in conn.execute(text(counts_sql), params).one()
            )
            counts = {
                "eligible": 0,
                "categories_not_covered": given,
                "expired": expired,
                "refused": refused,
                "withdrawn": withdrawn,
                "invalidated": invalidated,
                "other_recipient": others,
            }
            eligible_sql = (
                "SELECT subject_key FROM consent_state WHERE purpose = :p AND recipient = :r"
                " AND state = 'given' AND (valid_until_us IS NULL OR valid_until_us > :at)"
                f" AND {ok} ORDER BY subject_key"
            )
            late_sql = (
                "SELECT subject_key, recipient, state, categories, valid_until_us, explicit,"
                " occurred_us, seq FROM consent_state WHERE purpose = :p AND subject_key IN"
                " (SELECT subject_key FROM consent_state WHERE purpose = :p"
                " AND (occurred_us > :at OR seq >= :size)) ORDER BY subject_key, recipient"
            )
            yield CohortView(
                head=head,
                known=known,
                subjects_with_records=given + expired + refused + withdrawn + invalidated + others,
                counts=counts,
                eligible_pages=(
                    [r[0] for r in page]
                    for page in self._stream(conn, eligible_sql, params, "pec_cohort")
                ),
                late_rows=(
                    self._stream(conn, late_sql, params, "pec_cohort_late") if late else iter(())
                ),
            )

    @staticmethod
    def _stream(
        conn: Connection, sql: str, params: dict[str, Any], name: str
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Run ``sql`` (``:name`` parameters) through the driver; yield pages of rows.

        PostgreSQL reads through a named (server-side) cursor; a million SQLAlchemy Row
        objects would cost more than the query.
        """
        raw: Any = conn.connection.driver_connection
        if conn.dialect.name == "postgresql":
            sql = re.sub(r":([a-z][a-z0-9]*)", r"%(\1)s", sql)
            cur = raw.cursor(name=name)
        else:
            cur = raw.cursor()
        try:
            cur.execute(sql, params)
            while True:
                part = cur.fetchmany(50_000)
                if not part:
                    return
                yield part
        finally:
            cur.close()

    def state_at(
        self, subject_key: str, purpose: str, recipient: str, at_us: int, tree_size: int
    ) -> tuple[str, str, int | None, bool] | None:
        """The state of one record at a past time, from the log (projection fallback).

        Returns ``(state, categories, valid_until_us, explicit)`` or None.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    entries.c.action,
                    entries.c.categories,
                    entries.c.valid_until_us,
                    entries.c.explicit,
                )
                .where(
                    entries.c.purpose == purpose,
                    entries.c.subject_key == subject_key,
                    entries.c.recipient == recipient,
                    entries.c.occurred_us <= at_us,
                    entries.c.seq < tree_size,
                )
                .order_by(entries.c.occurred_us.desc(), entries.c.seq.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        return (
            STATE_AFTER[Action(row[0])].value,
            str(row[1]),
            None if row[2] is None else int(row[2]),
            bool(row[3]),
        )


__all__ = [
    "EMPTY_ROOT",
    "AppendResult",
    "CohortView",
    "LedgerStore",
    "SqlLedgerStore",
    "StoredEntry",
    "default_url",
    "make_engine",
    "migrate",
    "normalize_url",
]
