"""Settings of a PEC node, read from the environment (``PEC_*``) and injected where needed.

Nothing is built at import time: call :func:`get_settings` (cached) or construct the classes
directly in tests.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NodeSettings(BaseSettings):
    """Where a node keeps its state."""

    model_config = SettingsConfigDict(env_prefix="PEC_")

    home: Path = Field(
        default=Path(".pec"),
        description="Node home: config, keys and the default SQLite database live here.",
    )


class PsiSettings(BaseSettings):
    """Defaults of the PSI engine; each can be overridden per run."""

    model_config = SettingsConfigDict(env_prefix="PEC_PSI_")

    default_region: str = Field(
        default="CN",
        description="ISO 3166 region used to read phone numbers written without a country code.",
    )
    chunk_size: int = Field(
        default=65_536,
        ge=1_024,
        description="Identifiers per protocol message and per worker task.",
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="Worker processes per party for masking; 0 means one per CPU core.",
    )


class Settings(BaseSettings):
    """All settings of a node, composed from the subsystem classes."""

    node: NodeSettings = Field(default_factory=NodeSettings)
    psi: PsiSettings = Field(default_factory=PsiSettings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the node's settings, read once from the environment."""
    return Settings()
