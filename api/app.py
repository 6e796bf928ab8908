"""The FastAPI app of a node: ``create_app()`` builds it with its ledger and tokens injected.

Later subsystems add their routers with ``app.include_router(...)`` next to the consent router;
auth (:mod:`api.auth`) and error mapping (:mod:`api.errors`) are shared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.auth import Role, TokenRegistry
from api.errors import install_error_handlers
from api.routers import consent as consent_routes
from api.routers import jobs as job_routes
from api.settings import ApiSettings
from consent.ledger import ConsentLedger
from parties.config import CONFIG_FILE
from parties.node import PecNode
from pec import __version__
from pec.settings import NodeSettings


def create_app(
    ledger: ConsentLedger | None = None,
    *,
    settings: ApiSettings | None = None,
    tokens: Mapping[str, Role] | None = None,
    node: PecNode | None = None,
) -> FastAPI:
    """Build the node's API.

    Args:
        ledger: the consent ledger to serve; default: opened from ``PEC_HOME`` and
            ``PEC_API_CONSENT_DB`` when the app starts, closed when it stops.
        settings: API settings; default: read from the environment.
        tokens: raw bearer tokens and their roles (development and tests); when given they
            replace ``settings.tokens`` (which holds digests).
        node: the node's job service; default: opened from ``PEC_HOME`` when it holds a
            ``node.toml`` (with the ledger), else the job routes answer 503.
    """
    cfg = settings or ApiSettings()
    registry = (
        TokenRegistry.from_tokens(tokens) if tokens is not None else TokenRegistry(cfg.tokens)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = ledger is None
        home = NodeSettings().home
        app.state.ledger = ledger or ConsentLedger.open(home, cfg.consent_db)
        owned_node = node is None and (home / CONFIG_FILE).exists()
        if owned_node:
            app.state.node = PecNode.open(home, app.state.ledger, cfg.node_db)
        try:
            yield
        finally:
            if owned_node:
                app.state.node.store.close()
            if owned:
                app.state.ledger.close()

    app = FastAPI(
        title="PEC node API",
        version=__version__,
        description="Control plane of a PEC node: consent ledger, jobs (submit, status, "
        "results, audit manifests) and the signed envelopes peer nodes exchange.",
        lifespan=lifespan,
    )
    app.state.tokens = registry
    app.state.max_events = cfg.max_events_per_request
    app.state.node = node
    if ledger is not None:
        app.state.ledger = ledger
    install_error_handlers(app)
    app.include_router(consent_routes.router)
    app.include_router(job_routes.router)

    @app.get("/health", tags=["node"], summary="Liveness")
    def health() -> dict[str, str]:
        """Always ``ok`` while the process serves requests."""
        return {"status": "ok"}

    return app
