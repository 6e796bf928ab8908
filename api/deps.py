"""Dependencies injected into routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import Role, require
from consent.ledger import ConsentLedger


def get_ledger(request: Request) -> ConsentLedger:
    """The node's consent ledger, opened when the app was built."""
    ledger: ConsentLedger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[ConsentLedger, Depends(get_ledger)]
IngestRole = Annotated[Role, Depends(require(Role.INGEST))]
ComplianceRole = Annotated[Role, Depends(require(Role.COMPLIANCE))]
ReaderRole = Annotated[Role, Depends(require(Role.INGEST, Role.COMPLIANCE))]
AdminRole = Annotated[Role, Depends(require())]
