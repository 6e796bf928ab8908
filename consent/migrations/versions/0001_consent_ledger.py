"""Consent ledger: entries, Merkle nodes, tree heads, projections, contacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the ledger tables and the single ledger row."""
    op.create_table(
        "consent_entries",
        # INTEGER on SQLite makes seq the rowid (no separate primary-key index).
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("content_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("subject_key", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(128), nullable=False),
        sa.Column("categories", sa.Text(), nullable=False),
        sa.Column("occurred_us", sa.BigInteger(), nullable=False),
        sa.Column("valid_until_us", sa.BigInteger(), nullable=True),
        sa.Column("explicit", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index(
        "ix_consent_entries_subject", "consent_entries", ["subject_key", "purpose", "recipient"]
    )
    op.create_table(
        "consent_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "consent_tree_heads",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("issued_us", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.PrimaryKeyConstraint("tree_size"),
    )
    ledger = op.create_table(
        "consent_ledger",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(ledger, [{"id": 1, "size": 0}])
    op.create_table(
        "consent_state",
        sa.Column("subject_key", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("categories", sa.Text(), nullable=False),
        sa.Column("valid_until_us", sa.BigInteger(), nullable=True),
        sa.Column("explicit", sa.Boolean(), nullable=False),
        sa.Column("legal_basis", sa.String(32), nullable=False),
        sa.Column("occurred_us", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject_key", "purpose", "recipient"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "consent_subjects",
        sa.Column("subject_key", sa.String(64), nullable=False),
        sa.Column("first_occurred_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject_key"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "consent_preferences",
        sa.Column("subject_key", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("topics", sa.Text(), nullable=False),
        sa.Column("hours", sa.String(16), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("max_per_day", sa.Integer(), nullable=True),
        sa.Column("max_per_week", sa.Integer(), nullable=True),
        sa.Column("occurred_us", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject_key", "channel"),
    )
    op.create_table(
        "consent_contacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_key", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("contacted_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_consent_contacts_subject",
        "consent_contacts",
        ["subject_key", "channel", "contacted_us"],
    )


def downgrade() -> None:
    """Drop the ledger tables (destroys the ledger)."""
    for index, table in (
        ("ix_consent_contacts_subject", "consent_contacts"),
        ("ix_consent_entries_subject", "consent_entries"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "consent_contacts",
        "consent_preferences",
        "consent_subjects",
        "consent_state",
        "consent_ledger",
        "consent_tree_heads",
        "consent_nodes",
        "consent_entries",
    ):
        op.drop_table(table)
