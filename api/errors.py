"""Domain errors become HTTP responses here, and only here.

``ConsentInputError`` → 422 with ``loc`` naming the field (and the event's index for batches);
``UnknownSubjectError`` → 404; ``ProofError`` → 422; ``LedgerBusyError`` → 503; jobs and peers:
``UnknownJob`` → 404, ``JobStateError`` → 409, ``UnknownNode`` / ``NotApproved`` → 403,
``ReplayedMessage`` → 409, ``BadEnvelope`` → 400, ``PeerUnreachable`` → 502, a node that is not
configured → 503; any other ``PecError`` → 400. Bodies carry a
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
from parties.errors import (
    BadEnvelope,
    JobStateError,
    NodeConfigError,
    NotApproved,
    PeerUnreachable,
    ReplayedMessage,
    UnknownJob,
    UnknownNode,
)
from pec.errors import PecError

_PARTY_ERRORS: dict[type[PecError], tuple[int, str]] = {
    UnknownJob: (404, "unknown_job"),
    JobStateError: (409, "job_state"),
    UnknownNode: (403, "unknown_node"),
    NotApproved: (403, "not_approved"),
    ReplayedMessage: (409, "replayed"),
    BadEnvelope: (400, "bad_envelope"),
    PeerUnreachable: (502, "peer_unreachable"),
    NodeConfigError: (503, "node_not_configured"),
}


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

    async def _party(_: Request, exc: Exception) -> JSONResponse:
        status, code = next(v for k, v in _PARTY_ERRORS.items() if isinstance(exc, k))
        return JSONResponse(status_code=status, content={"detail": str(exc), "code": code})

    for kind in _PARTY_ERRORS:
        app.add_exception_handler(kind, _party)

    @app.exception_handler(PecError)
    async def _pec(_: Request, exc: PecError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc), "code": "rejected"})
