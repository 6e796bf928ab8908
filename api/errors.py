"""Domain errors become HTTP responses here, and only here.

``ConsentInputError`` → 422 with ``loc`` naming the field (and the event's index for batches);
``UnknownSubjectError`` → 404; ``ProofError`` → 422; ``LedgerBusyError`` → 503; any other
``PecError`` → 400. Bodies carry a
``code`` and a reason, never a raw identifier.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from consent.errors import (
    ConsentInputError,
    LedgerBusyError,
    ProofError,
    UnknownSubjectError,
)
from pec.errors import PecError


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on an app."""

    @app.exception_handler(ConsentInputError)
    async def _input(_: Request, exc: ConsentInputError) -> JSONResponse:
        loc: list[str | int] = ["body"]
        if exc.source == "request" and exc.row is not None:
            loc += ["events", exc.row - 1]
        if exc.field is not None:
            loc.append(exc.field)
        return JSONResponse(
            status_code=422,
            content={
                "detail": [{"loc": loc, "msg": exc.reason, "type": "consent_input"}],
                "code": "invalid_event",
            },
        )

    @app.exception_handler(UnknownSubjectError)
    async def _unknown(_: Request, exc: UnknownSubjectError) -> JSONResponse:
        return JSONResponse(
            status_code=404, content={"detail": str(exc), "code": "unknown_subject"}
        )

    @app.exception_handler(ProofError)
    async def _proof(_: Request, exc: ProofError) -> JSONResponse:
        return JSONResponse(
            status_code=422, content={"detail": str(exc), "code": "bad_proof_request"}
        )

    @app.exception_handler(LedgerBusyError)
    async def _busy(_: Request, exc: LedgerBusyError) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"detail": str(exc), "code": "ledger_busy"},
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(PecError)
    async def _pec(_: Request, exc: PecError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc), "code": "rejected"})
