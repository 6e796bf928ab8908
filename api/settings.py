"""Settings of a node's HTTP API (``PEC_API_*``), read where the app is built, never at import."""

from __future__ import annotations

import hashlib
import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.auth import Role


def token_digest(token: str) -> str:
    """Return the SHA-256 of an API token, as stored in the settings."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApiSettings(BaseSettings):
    """Who may call the API and where the consent ledger lives."""

    model_config = SettingsConfigDict(env_prefix="PEC_API_")

    tokens: dict[str, Role] = Field(
        default_factory=dict,
        description=(
            "Bearer tokens as a JSON object mapping SHA-256(token) in hex to a role "
            "(admin, ingest, compliance). Tokens themselves are never stored."
        ),
    )
    consent_db: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the consent ledger; default: SQLite in PEC_HOME.",
    )
    node_db: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the node's job records; default: the node.toml "
        "[database] url, else SQLite in PEC_HOME.",
    )
    max_events_per_request: int = Field(
        default=1_000, ge=1, le=100_000, description="Largest batch POST /consent/events takes."
    )

    @field_validator("tokens")
    @classmethod
    def _digests_only(cls, value: dict[str, Role]) -> dict[str, Role]:
        for digest in value:
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(
                    "tokens must map SHA-256 hex digests to roles (store digests, not tokens)"
                )
            if digest == token_digest("changeme") or digest == token_digest(""):
                raise ValueError("a placeholder token is configured; generate a real one")
        return value
