"""Recipient registry (PIPL Art. 23 notice set).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the recipient registry."""
    op.create_table(
        "consent_recipients",
        sa.Column("recipient_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("contact", sa.String(256), nullable=False),
        sa.Column("purposes", sa.Text(), nullable=False),
        sa.Column("processing_method", sa.String(256), nullable=False),
        sa.Column("data_categories", sa.Text(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("recipient_id"),
    )


def downgrade() -> None:
    """Drop the recipient registry."""
    op.drop_table("consent_recipients")
