"""Dependencies injected into routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import Role, require
from consent.ledger import ConsentLedger
from parties.errors import NodeConfigError
from parties.node import PecNode


def get_ledger(request: Request) -> ConsentLedger:
    """The node's consent ledger, opened when the app was built."""
    ledger: ConsentLedger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[ConsentLedger, Depends(get_ledger)]
IngestRole = Annotated[Role, Depends(require(Role.INGEST))]
ComplianceRole = Annotated[Role, Depends(require(Role.COMPLIANCE))]
ReaderRole = Annotated[Role, Depends(require(Role.INGEST, Role.COMPLIANCE))]
AdminRole = Annotated[Role, Depends(require())]
ModelerRole = Annotated[Role, Depends(require(Role.MODELER))]
JobReaderRole = Annotated[Role, Depends(require(Role.MODELER, Role.COMPLIANCE))]


def get_node(request: Request) -> PecNode:
    """The node's job service (only when the API serves a node home).

    Raises:
        NodeConfigError: this API was started without a node (no ``node.toml`` in PEC_HOME).
    """
    node: PecNode | None = getattr(request.app.state, "node", None)
    if node is None:
        raise NodeConfigError("this API serves no node: run `pec node init` and `pec node start`")
    return node


NodeDep = Annotated[PecNode, Depends(get_node)]
