"""Helpers shared by the consent and API tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

FIXED_NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def event(i: int | str, subject: str = "alice", **over: Any) -> dict[str, Any]:
    """A valid grant event as an import row; override any field."""
    row: dict[str, Any] = {
        "event_id": f"ev-{i}",
        "subject_id": subject,
        "action": "grant",
        "purpose": "marketing.lead_scoring",
        "recipient": "",
        "data_categories": "identifier.phone;income_level",
        "legal_basis": "consent",
        "notice_id": "privacy-notice",
        "notice_version": "3",
        "method": "app",
        "occurred_at": "2026-01-10T09:00:00+08:00",
        "valid_until": "",
        "jurisdiction": "CN",
    }
    row.update(over)
    return row


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime = FIXED_NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
