"""FastAPI control plane of a PEC node: ``create_app()``; roles admin, ingest, compliance."""

from api.app import create_app
from api.auth import Role

__all__ = ["Role", "create_app"]
