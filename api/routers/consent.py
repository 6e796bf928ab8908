"""Consent routes: thin wrappers over :class:`consent.ledger.ConsentLedger`.

Subject identifiers travel in request bodies only (never in paths or query strings, which end up
in access logs). Write routes need ``ingest``; audit routes need ``compliance``; ``admin`` may do
everything.
"""

from __future__ import annotations

import csv
import os
import tempfile
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from api.deps import AdminRole, ComplianceRole, IngestRole, LedgerDep, ReaderRole
from api.schemas import (
    AppendOut,
    CheckIn,
    CohortIn,
    ConsistencyOut,
    ContactCheckIn,
    ContactIn,
    DecisionOut,
    EventsIn,
    InclusionOut,
    RecipientIn,
    RecipientOut,
    SignedDocument,
    SubjectIn,
    TreeHeadWithKeyOut,
    VerifyOut,
    WithdrawIn,
)
from consent.model import format_time, parse_time
from consent.storage import AppendResult

router = APIRouter(prefix="/consent", tags=["consent"])

_MAX_INDEX = 2**62
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token."},
    403: {"description": "The token's role may not do this."},
    422: {"description": "Malformed request; `loc` names the field."},
}


def _when(value: str | None, field: str) -> datetime | None:
    return parse_time(value, field) if value else None


def _append_out(result: AppendResult) -> AppendOut:
    head = result.tree_head.to_dict() if result.tree_head else None
    return AppendOut.model_validate(
        {"appended": result.appended, "skipped": result.skipped, "tree_head": head}
    )


@router.post("/events", responses=_ERRORS, summary="Record consent or preference events")
def record_events(body: EventsIn, ledger: LedgerDep, _: IngestRole, request: Request) -> AppendOut:
    """Record a batch atomically; events already recorded (same ``event_id``) are skipped."""
    limit: int = request.app.state.max_events
    if len(body.events) > limit:
        from consent.errors import ConsentInputError

        raise ConsentInputError(f"holds more than {limit} events", field="events")
    rows = [e.model_dump(exclude_none=True) for e in body.events]
    return _append_out(ledger.record(rows))


@router.post("/withdraw", responses=_ERRORS, summary="Withdraw consent (one call)")
def withdraw(body: WithdrawIn, ledger: LedgerDep, _: IngestRole) -> AppendOut:
    """Withdraw a subject's consent for a purpose and recipient."""
    row = body.model_dump()
    row.update(
        action="withdraw",
        legal_basis="consent",
        data_categories=[],
        occurred_at=body.occurred_at or format_time(ledger.clock()),
    )
    return _append_out(ledger.record([row]))


@router.post("/check", responses=_ERRORS, summary="Check consent for a use")
def check(body: CheckIn, ledger: LedgerDep, _: ReaderRole) -> DecisionOut:
    """Answer from the current-state projection."""
    d = ledger.check(
        body.subject_id, body.purpose, body.recipient, body.data_categories, _when(body.at, "at")
    )
    return DecisionOut(allowed=d.allowed, reasons=list(d.reasons), state=d.state)


@router.post("/contact-check", responses=_ERRORS, summary="Check a contact preference")
def contact_check(body: ContactCheckIn, ledger: LedgerDep, _: ReaderRole) -> DecisionOut:
    """Answer whether the subject may be contacted on this channel, topic and time."""
    d = ledger.check_contact(body.subject_id, body.channel, body.topic, _when(body.at, "at"))
    return DecisionOut(allowed=d.allowed, reasons=list(d.reasons))


@router.post("/contacts", responses=_ERRORS, status_code=204, summary="Record a contact made")
def record_contact(body: ContactIn, ledger: LedgerDep, _: IngestRole) -> None:
    """Count a contact toward the subject's frequency caps."""
    ledger.record_contact(body.subject_id, body.channel, body.topic, _when(body.at, "at"))


@router.post(
    "/history",
    responses={**_ERRORS, 404: {"description": "No event for this subject."}},
    summary="A subject's events",
)
def history(body: SubjectIn, ledger: LedgerDep, _: ComplianceRole) -> list[dict[str, Any]]:
    """The subject's events in ledger order (subject keyed, never echoed)."""
    return ledger.history(body.subject_id)


@router.post(
    "/receipt",
    responses={**_ERRORS, 404: {"description": "No event for this subject."}},
    summary="A subject's signed consent receipt",
)
def receipt(body: SubjectIn, ledger: LedgerDep, _: ComplianceRole) -> SignedDocument:
    """ISO/IEC TS 27560 field names, inclusion proofs, Ed25519 signature."""
    return ledger.receipt(body.subject_id)


@router.post("/cohort", responses=_ERRORS, summary="Cohort snapshot (signed receipt)")
def cohort(body: CohortIn, ledger: LedgerDep, _: ComplianceRole) -> SignedDocument:
    """Eligible count, exclusions by reason and subject-list digest, bound to a tree head."""
    snap = ledger.cohort(body.purpose, body.recipient, body.data_categories, _when(body.at, "at"))
    return ledger.cohort_receipt(snap)


@router.post(
    "/cohort/export",
    responses={**_ERRORS, 200: {"content": {"text/csv": {}}, "description": "Subject keys."}},
    response_class=FileResponse,
    summary="Cohort snapshot as CSV",
)
def cohort_export(body: CohortIn, ledger: LedgerDep, _: ComplianceRole) -> FileResponse:
    """The eligible subject keys as CSV (streamed from a temporary file)."""
    fd, name = tempfile.mkstemp(prefix="pec-cohort-", suffix=".csv")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["subject_key"])
            snap = ledger.cohort(
                body.purpose,
                body.recipient,
                body.data_categories,
                _when(body.at, "at"),
                sink=lambda key: writer.writerow([key]),
            )
    except BaseException:
        os.unlink(name)
        raise
    head = snap.tree_head
    return FileResponse(
        name,
        media_type="text/csv",
        filename="cohort.csv",
        headers={
            "X-PEC-Subjects-SHA256": snap.subjects_sha256,
            "X-PEC-Tree-Size": str(head.tree_size if head else 0),
            "X-PEC-Eligible": str(snap.eligible),
        },
        background=BackgroundTask(os.unlink, name),
    )


@router.get("/tree-head", responses=_ERRORS, summary="Latest signed tree head")
def tree_head(ledger: LedgerDep, _: ReaderRole) -> TreeHeadWithKeyOut:
    """The latest signed tree head and the node's public key (PEM)."""
    head = ledger.tree_head()
    return TreeHeadWithKeyOut.model_validate(
        {
            "tree_head": head.to_dict() if head else None,
            "public_key_pem": ledger.keys.public_pem().decode("ascii"),
        }
    )


@router.get("/proofs/inclusion", responses=_ERRORS, summary="Inclusion proof")
def inclusion(
    ledger: LedgerDep,
    _: ComplianceRole,
    index: Annotated[int, Query(ge=0, le=_MAX_INDEX)],
    tree_size: Annotated[int | None, Query(ge=1, le=_MAX_INDEX)] = None,
) -> InclusionOut:
    """Audit path of entry ``index`` under a signed tree head (default: the latest)."""
    return InclusionOut.model_validate(ledger.inclusion_proof(index, tree_size))


@router.get("/proofs/consistency", responses=_ERRORS, summary="Consistency proof")
def consistency(
    ledger: LedgerDep,
    _: ComplianceRole,
    old_size: Annotated[int, Query(ge=1, le=_MAX_INDEX)],
    new_size: Annotated[int | None, Query(ge=1, le=_MAX_INDEX)] = None,
) -> ConsistencyOut:
    """Proof that the tree of ``new_size`` extends the tree of ``old_size``."""
    return ConsistencyOut.model_validate(ledger.consistency_proof(old_size, new_size))


@router.get("/verify", responses=_ERRORS, summary="Verify the whole ledger")
def verify(ledger: LedgerDep, _: ComplianceRole) -> VerifyOut:
    """Recompute every leaf, subtree and signed tree head; ``ok`` false names the bad entry."""
    return VerifyOut.model_validate(ledger.verify().to_dict())


@router.put("/recipients/{recipient_id}", responses=_ERRORS, summary="Register a recipient")
def put_recipient(
    recipient_id: Annotated[
        str, Path(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
    ],
    body: RecipientIn,
    ledger: LedgerDep,
    _: AdminRole,
) -> RecipientOut:
    """Register or update a third party and its PIPL Art. 23 notice set."""
    r = ledger.register_recipient({"recipient_id": recipient_id, **body.model_dump()})
    return RecipientOut.model_validate(r.to_dict())


@router.get("/recipients", responses=_ERRORS, summary="List recipients")
def list_recipients(ledger: LedgerDep, _: ReaderRole) -> list[RecipientOut]:
    """All registered third parties."""
    return [RecipientOut.model_validate(r.to_dict()) for r in ledger.recipients()]


@router.post("/projections/rebuild", responses=_ERRORS, summary="Rebuild projections")
def rebuild(ledger: LedgerDep, _: AdminRole) -> dict[str, int]:
    """Replay the log into the current-state projections."""
    return {"replayed": ledger.rebuild_projections()}


__all__ = ["router"]
