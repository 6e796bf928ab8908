"""Table definitions of the consent ledger (SQLAlchemy Core).

The Alembic migrations in ``consent/migrations`` create exactly these tables; a test compares the
two. ``consent_entries`` and ``consent_nodes`` are append-only: nothing in PEC updates or deletes
their rows, and the verifier detects anyone who does. ``consent_state`` and
``consent_preferences`` are projections, rebuildable from the entries at any time.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

#: One row per ledger entry. ``payload`` is the exact leaf data (canonical JSON); the other
#: columns are copies of payload fields for indexed queries, checked by the verifier.
entries = Table(
    "consent_entries",
    metadata,
    # INTEGER on SQLite makes seq the rowid (no separate primary-key index); BIGINT elsewhere.
    Column("seq", _SEQ, primary_key=True, autoincrement=False),
    Column("event_id", String(128), nullable=False, unique=True),
    Column("content_hash", LargeBinary(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("subject_key", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("recipient", String(128), nullable=False),
    Column("categories", Text, nullable=False),
    Column("occurred_us", BigInteger, nullable=False),
    Column("valid_until_us", BigInteger, nullable=True),
    Column("explicit", Boolean, nullable=False),
    # One secondary index serves history (a subject's few rows) and the cohort's log fallback.
    Index("ix_consent_entries_subject", "subject_key", "purpose", "recipient"),
)

#: Hashes of every complete subtree: level 0 holds the leaf hashes, level L the subtree of
#: ``2**L`` leaves starting at ``idx * 2**L``.
nodes = Table(
    "consent_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    sqlite_with_rowid=False,
)

tree_heads = Table(
    "consent_tree_heads",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("issued_us", BigInteger, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
)

#: A single row (id = 1) holding the ledger size; writers lock it to serialize appends.
ledger = Table(
    "consent_ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
)

state = Table(
    "consent_state",
    metadata,
    Column("subject_key", String(64), primary_key=True),
    Column("purpose", String(64), primary_key=True),
    Column("recipient", String(128), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("categories", Text, nullable=False),
    Column("valid_until_us", BigInteger, nullable=True),
    Column("explicit", Boolean, nullable=False),
    Column("legal_basis", String(32), nullable=False),
    Column("occurred_us", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

#: Every subject the log knows, with the time of its earliest event (cohort "no consent" counts).
subjects = Table(
    "consent_subjects",
    metadata,
    Column("subject_key", String(64), primary_key=True),
    Column("first_occurred_us", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

preferences = Table(
    "consent_preferences",
    metadata,
    Column("subject_key", String(64), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("allowed", Boolean, nullable=False),
    Column("topics", Text, nullable=False),
    Column("hours", String(16), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("max_per_day", Integer, nullable=True),
    Column("max_per_week", Integer, nullable=True),
    Column("occurred_us", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
)

#: Third parties data may go to, with the PIPL Art. 23 notice set (name, contact, purposes,
#: processing method, categories). Reference data: the consent itself is in the log.
recipients = Table(
    "consent_recipients",
    metadata,
    Column("recipient_id", String(128), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("contact", String(256), nullable=False),
    Column("purposes", Text, nullable=False),
    Column("processing_method", String(256), nullable=False),
    Column("data_categories", Text, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

#: Contacts actually made (operational data for frequency caps; not part of the Merkle log).
contacts = Table(
    "consent_contacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_key", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("topic", String(64), nullable=False),
    Column("contacted_us", BigInteger, nullable=False),
    Index("ix_consent_contacts_subject", "subject_key", "channel", "contacted_us"),
)
