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
from collections.abc import Callable, Iterable, Iterator
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
from consent.merkle import EMPTY_ROOT, Frontier, leaf_hash
from consent.model import (
    STATE_AFTER,
    Action,
    ConsentEvent,
    Recipient,
    canonical_json,
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
            cur.execute("PRAGMA cache_size=-65536")  # 64 MiB: index inserts of big imports
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
        appended = skipped = 0
        first_seq: int | None = None
        head: SignedTreeHead | None = None
        with self._writer.begin() as conn:
            size = conn.execute(
                select(ledger.c.size).where(ledger.c.id == 1).with_for_update()
            ).scalar_one()
            frontier = Frontier.from_perfect(size, lambda lv, ix: self._perfect(conn, lv, ix))
            recorded_at = now()
            batch: list[tuple[int, ConsentEvent]] = []
            for item in items:
                batch.append(item)
                if len(batch) >= _CHUNK:
                    a, s = self._append_chunk(conn, batch, frontier, recorded_at, source)
                    appended, skipped = appended + a, skipped + s
                    batch = []
            if batch:
                a, s = self._append_chunk(conn, batch, frontier, recorded_at, source)
                appended, skipped = appended + a, skipped + s
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

    def _append_chunk(
        self,
        conn: Connection,
        batch: list[tuple[int, ConsentEvent]],
        frontier: Frontier,
        recorded_at: datetime,
        source: str,
    ) -> tuple[int, int]:
        ids = list({ev.event_id for _, ev in batch})
        known: dict[str, bytes] = {}
        for start in range(0, len(ids), _CHUNK):
            rows = conn.execute(
                select(entries.c.event_id, entries.c.content_hash).where(
                    entries.c.event_id.in_(ids[start : start + _CHUNK])
                )
            )
            known.update({r.event_id: bytes(r.content_hash) for r in rows})
        entry_rows: list[tuple[Any, ...]] = []
        node_rows: list[tuple[Any, ...]] = []
        fresh: list[tuple[int, ConsentEvent]] = []
        skipped = 0
        recorded = format_time(recorded_at)
        for row, ev in batch:
            content_json = canonical_json(ev.content()).decode("utf-8")
            chash = hashlib.sha256(content_json.encode("utf-8")).digest()
            seen = known.get(ev.event_id)
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
            known[ev.event_id] = chash
            seq = frontier.size
            payload = _payload_from_content(seq, recorded, content_json)
            leaf = leaf_hash(payload.encode("utf-8"))
            entry_rows.append(
                (
                    seq,
                    ev.event_id,
                    chash,
                    payload,
                    ev.subject_key,
                    ev.action.value,
                    ev.purpose,
                    ev.recipient,
                    ";".join(ev.data_categories),
                    to_micros(ev.occurred_at),
                    to_micros(ev.valid_until) if ev.valid_until else None,
                    ev.explicit,
                )
            )
            node_rows.append((0, seq, leaf))
            for node in frontier.append(leaf):
                node_rows.append((node.level, node.index, node.hash))
            fresh.append((seq, ev))
        if entry_rows:
            _bulk_insert(conn, "consent_entries", _ENTRY_COLS, entry_rows)
            _bulk_insert(conn, "consent_nodes", _NODE_COLS, node_rows)
            self._project(conn, fresh)
        return len(entry_rows), skipped

    def _project(self, conn: Connection, fresh: list[tuple[int, ConsentEvent]]) -> None:
        """Fold new events into the projections; newest (occurred_at, seq) wins."""
        latest: dict[tuple[str, str, str], dict[str, Any]] = {}
        prefs: dict[tuple[str, str], dict[str, Any]] = {}
        first: dict[str, int] = {}
        for seq, ev in fresh:
            occurred = to_micros(ev.occurred_at)
            seen_at = first.get(ev.subject_key)
            if seen_at is None or occurred < seen_at:
                first[ev.subject_key] = occurred
            if ev.action is Action.PREFERENCE:
                assert ev.preference is not None
                p = ev.preference
                pkey = (ev.subject_key, p.channel.value)
                cur = prefs.get(pkey)
                if cur is None or (cur["occurred_us"], cur["seq"]) < (occurred, seq):
                    prefs[pkey] = {
                        "subject_key": ev.subject_key,
                        "channel": p.channel.value,
                        "allowed": p.allowed,
                        "topics": ";".join(p.topics),
                        "hours": p.hours,
                        "timezone": p.timezone,
                        "max_per_day": p.max_per_day,
                        "max_per_week": p.max_per_week,
                        "occurred_us": occurred,
                        "seq": seq,
                    }
                continue
            key = (ev.subject_key, ev.purpose, ev.recipient)
            cur_s = latest.get(key)
            if cur_s is None or (cur_s["occurred_us"], cur_s["seq"]) < (occurred, seq):
                latest[key] = {
                    "subject_key": ev.subject_key,
                    "purpose": ev.purpose,
                    "recipient": ev.recipient,
                    "state": STATE_AFTER[ev.action].value,
                    "categories": ";".join(ev.data_categories),
                    "valid_until_us": to_micros(ev.valid_until) if ev.valid_until else None,
                    "explicit": ev.explicit,
                    "legal_basis": ev.legal_basis.value,
                    "occurred_us": occurred,
                    "seq": seq,
                }
        self._upsert(conn, state, ["subject_key", "purpose", "recipient"], list(latest.values()))
        self._upsert(conn, preferences, ["subject_key", "channel"], list(prefs.values()))
        if first:
            mark = "%s" if conn.dialect.name == "postgresql" else "?"
            conn.exec_driver_sql(
                "INSERT INTO consent_subjects (subject_key, first_occurred_us) "
                f"VALUES ({mark}, {mark}) ON CONFLICT (subject_key) DO UPDATE "
                "SET first_occurred_us = excluded.first_occurred_us "
                "WHERE excluded.first_occurred_us < consent_subjects.first_occurred_us",
                list(first.items()),
            )

    def _upsert(
        self, conn: Connection, table: Any, keys: list[str], rows: list[dict[str, Any]]
    ) -> None:
        """Insert or replace projection rows, keeping whichever is newer by (occurred, seq)."""
        if not rows:
            return
        cols = [c.name for c in table.c]
        tuples = [tuple(r[c] for c in cols) for r in rows]
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

    def cohort_snapshot_rows(
        self, purpose: str, at_us: int
    ) -> Iterator[tuple[SignedTreeHead | None, int, list[tuple[Any, ...]]]]:
        """Read a consistent snapshot for a cohort: head, known-subject count, projection rows.

        Yields once per page: ``(head, known_subjects, rows)`` where rows are
        ``(subject_key, recipient, state, categories, valid_until_us, explicit, occurred_us, seq)``
        ordered by subject key. Head, count and rows come from one read transaction (repeatable
        read on PostgreSQL), so they describe the same ledger state.
        """
        opts: dict[str, Any] = {}
        if self.dialect == "postgresql":
            opts["isolation_level"] = "REPEATABLE READ"
        with self.engine.connect().execution_options(**opts) as conn, conn.begin():
            row = conn.execute(
                select(tree_heads).order_by(tree_heads.c.tree_size.desc()).limit(1)
            ).first()
            head = self._head(row) if row is not None else None
            known = int(
                conn.execute(
                    select(func.count())
                    .select_from(subjects)
                    .where(subjects.c.first_occurred_us <= at_us)
                ).scalar_one()
            )
            # Rows go straight from the driver (a server-side cursor on PostgreSQL): a million
            # SQLAlchemy Row objects would cost more than the query.
            raw: Any = conn.connection.driver_connection
            pg = self.dialect == "postgresql"
            cur = raw.cursor(name="pec_cohort") if pg else raw.cursor()
            try:
                cur.execute(
                    "SELECT subject_key, recipient, state, categories, valid_until_us, explicit, "
                    "occurred_us, seq FROM consent_state WHERE purpose = "
                    + ("%s" if pg else "?")
                    + " ORDER BY subject_key, recipient",
                    (purpose,),
                )
                sent = False
                while True:
                    part = cur.fetchmany(50_000)
                    if not part:
                        break
                    sent = True
                    yield head, known, part
                if not sent:
                    yield head, known, []
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
    "LedgerStore",
    "SqlLedgerStore",
    "StoredEntry",
    "default_url",
    "make_engine",
    "migrate",
    "normalize_url",
]
