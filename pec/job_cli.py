"""``pec job``: submit a job to a node's API and read its status, result and audit manifest.

Talks to the node's control plane over HTTP with a bearer token (``PEC_API_TOKEN``; never printed).
Exit codes: 0 done, 1 the job was rejected or failed (or did not end in ``--timeout``), 2 bad
input or an API error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from parties.errors import PartyError
from parties.jobs import JobSpec
from pec.psi_cli import fail

# the group's summary (its help) is in pec.cli.GROUPS, so that `pec --help` need not import it
app = typer.Typer(no_args_is_help=True)
Url = Annotated[
    str, typer.Option(envvar="PEC_API_URL", help="The node's control plane (PEC_API_URL).")
]
Token = Annotated[
    str, typer.Option(envvar="PEC_API_TOKEN", help="API token (PEC_API_TOKEN).", show_default=False)
]
DEFAULT_URL = "http://127.0.0.1:8700"
_TERMINAL = {"rejected", "completed", "failed"}


def _call(method: str, url: str, token: str, path: str, body: Any = None) -> Any:
    try:
        response = httpx.request(
            method,
            f"{url.rstrip('/')}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach {url} ({type(exc).__name__})", 2) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise fail(f"{method} {path}: {response.status_code} {detail}", 2)
    return response.json()


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


@app.command("submit")
def submit(
    spec: Annotated[Path, typer.Argument(help="Job spec (TOML or JSON).")],
    url: Url = DEFAULT_URL,
    token: Token = "",
    wait: Annotated[bool, typer.Option(help="Wait until the job ends.")] = False,
    timeout: Annotated[float, typer.Option(help="Longest wait, seconds.")] = 900,
) -> None:
    """Submit a job spec to the brand node; prints the job (after the partner's decision)."""
    try:
        body = JobSpec.load(spec).model_dump(mode="json")
    except PartyError as exc:
        raise fail(str(exc), 2) from None
    job = _call("POST", url, token, "/jobs", body)
    deadline = time.monotonic() + timeout
    while wait and job["state"] not in _TERMINAL and time.monotonic() < deadline:
        time.sleep(1)
        job = _call("GET", url, token, f"/jobs/{job['job_id']}")
    _print(job)
    if job["state"] in ("rejected", "failed") or (wait and job["state"] not in _TERMINAL):
        raise typer.Exit(1)


@app.command("status")
def status(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """A job's state, reason and progress."""
    _print(_call("GET", url, token, f"/jobs/{job_id}"))


@app.command("list")
def list_jobs(url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Jobs on the node, newest first."""
    _print(_call("GET", url, token, "/jobs"))


@app.command("result")
def result(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """A completed job's outputs and metrics."""
    _print(_call("GET", url, token, f"/jobs/{job_id}/result"))


@app.command("manifest")
def manifest(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """A job's audit manifest (compliance role)."""
    _print(_call("GET", url, token, f"/jobs/{job_id}/manifest"))


@app.command("verify")
def verify(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Check the node's cohorts of a job against its consent ledger (compliance role).

    Exits 1 when a check fails: the tree head's signature, its presence and consistency in the
    ledger, or the cohort recut at its recorded time.
    """
    answer = _call("GET", url, token, f"/jobs/{job_id}/manifest/verify")
    _print(answer)
    if not answer.get("ok"):
        raise typer.Exit(1)
