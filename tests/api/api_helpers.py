"""Tokens of the API tests, one per role."""

from __future__ import annotations

from api import Role

TOKENS = {
    "t-admin": Role.ADMIN,
    "t-ingest": Role.INGEST,
    "t-compliance": Role.COMPLIANCE,
    "t-modeler": Role.MODELER,
}


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer t-{role}"}
