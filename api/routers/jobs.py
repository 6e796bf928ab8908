"""Job routes: thin wrappers over :class:`parties.node.PecNode`.

``modeler`` submits jobs and reads their status and results; ``compliance`` reads status and
audit manifests; ``admin`` may do all of it. ``POST /peer/envelopes`` is how peer nodes talk to
this node: it takes no bearer token, because every envelope is signed by a configured peer's key
and is refused otherwise (unknown node, not approved, replayed, bad signature).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.deps import ComplianceRole, JobReaderRole, ModelerRole, NodeDep
from api.schemas import JobOut, JobResultOut
from parties.errors import BadEnvelope
from parties.jobs import JobSpec
from parties.jobstore import JobRecord
from parties.node import MAX_ENVELOPE

router = APIRouter(tags=["jobs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token."},
    403: {"description": "The token's role may not do this."},
    404: {"description": "No such job on this node."},
    422: {"description": "Malformed request; `loc` names the field."},
}
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The job's id.")]


def _out(job: JobRecord) -> JobOut:
    return JobOut(
        job_id=job.job_id,
        side=job.side,
        peer=job.peer,
        kind=job.kind,
        purpose=job.purpose,
        state=job.state.value,
        reason=job.reason,
        progress=job.progress,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


@router.post(
    "/jobs",
    status_code=201,
    responses={**_ERRORS, 400: {"description": "Refused (not a brand, unknown partner...)."}},
    summary="Submit a job (brand)",
)
def submit_job(spec: JobSpec, node: NodeDep, _: ModelerRole) -> JobOut:
    """Cut the consented input, propose the job to the partner, return it after the decision."""
    return _out(node.submit(spec))


@router.get("/jobs", responses=_ERRORS, summary="List jobs")
def list_jobs(
    node: NodeDep,
    _: JobReaderRole,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[JobOut]:
    """Jobs on this node, newest first."""
    return [_out(j) for j in node.jobs(limit, offset)]


@router.get("/jobs/{job_id}", responses=_ERRORS, summary="A job's status")
def job_status(job_id: JobId, node: NodeDep, _: JobReaderRole) -> JobOut:
    """State, reason and progress of one job."""
    return _out(node.job(job_id))


@router.get(
    "/jobs/{job_id}/result",
    responses={**_ERRORS, 409: {"description": "The job has not completed."}},
    summary="A completed job's outputs",
)
def job_result(job_id: JobId, node: NodeDep, _: ModelerRole) -> JobResultOut:
    """Outputs and metrics, only once the job completed (never partial ones)."""
    job = node.result(job_id)
    return JobResultOut(job_id=job.job_id, kind=job.kind, metrics=job.metrics, outputs=job.outputs)


@router.get("/jobs/{job_id}/manifest", responses=_ERRORS, summary="A job's audit manifest")
def job_manifest(job_id: JobId, node: NodeDep, _: ComplianceRole) -> dict[str, Any]:
    """Consent tree heads and cohorts of both sides, decisions, message digests, outputs."""
    return node.manifest(job_id)


@router.get(
    "/jobs/{job_id}/manifest/verify",
    responses=_ERRORS,
    summary="Check this node's cohorts in a manifest against its consent ledger",
)
def job_manifest_verify(job_id: JobId, node: NodeDep, _: ComplianceRole) -> dict[str, Any]:
    """Tree-head signature, presence and consistency, and the cohort recut at its time."""
    return node.verify_manifest(job_id)


@router.post(
    "/peer/envelopes",
    tags=["peers"],
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The node's signed answer.",
        },
        400: {"description": "Malformed envelope or bad signature."},
        403: {"description": "Unknown node, or no approved job for the sender."},
        409: {"description": "Replayed message."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    summary="Receive a signed envelope from a peer node",
)
async def peer_envelope(request: Request, node: NodeDep) -> Response:
    """Accept a proposal or a job-state message from a configured peer; answer signed."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_ENVELOPE:
            raise BadEnvelope("envelope too large")
    answer = await run_in_threadpool(node.receive, body)
    return Response(answer, media_type="application/octet-stream")
