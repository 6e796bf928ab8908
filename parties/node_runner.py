"""Running approved jobs over the Flower deployment, from inside a node's process.

Brand (:class:`FlowerBrandRunner`): for each approved job, ``flwr run`` the PEC app on the
brand's own SuperLink with the job's consented input (``jobs/<id>/input.csv``) and polls the run;
the ServerApp drives the PSI rounds. Partner (:class:`PartnerRelay`): the partner node's own
loopback relay target. Its SuperNode's ClientApp (brand-supplied code) only relays bytes here;
this process holds the consented input, the PSI state and the keys, and answers only jobs the
partner approved (``POST /relay/{job_id}``; anything else gets 403).

Both sides end a job within a bounded time: ``completed`` with the declared outputs only, or
``failed`` with a reason and nothing published. Job kinds run today: ``overlap`` (PSI count) and
the other PSI-only kinds (``matching``, ``enrichment`` without payloads); the model kinds are
refused at start with a reason until their runner is wired.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from parties.errors import PartyError
from parties.jobs import JobKind, JobSpec
from parties.jobstore import JobRecord, JobState
from parties.local_flower import LocalFlower
from parties.node import PecNode
from parties.psi_job import PsiJobSide
from parties.relay_server import MAX_BODY, PsiRelayJob
from pec.errors import PecError
from psi.wire import Role

__all__ = ["FlowerBrandRunner", "PartnerRelay", "keys_text"]

RUNNABLE = frozenset({JobKind.OVERLAP, JobKind.MATCHING})


def keys_text(spec: JobSpec) -> str:
    """The PSI key specs of a job (``brand=partner:kind``, ``;``-separated)."""
    return ";".join(f"{k.brand}={k.partner}:{k.kind.value}" for k in spec.keys)


def _outputs(spec: JobSpec, summary: dict[str, Any]) -> dict[str, Any]:
    """Only the outputs the spec declared (and the policy allowed)."""
    out: dict[str, Any] = {}
    if "count" in spec.outputs:
        out["count"] = summary.get("intersection")
    if "per_key" in spec.outputs:
        out["per_key"] = summary.get("per_key")
    return out


def _fail(node: PecNode, job_id: str, reason: str, *, tell_peer: bool = True) -> None:
    try:
        node.store.update(job_id, state=JobState.FAILED, reason=reason)
    except PartyError:
        return  # already ended
    if tell_peer:
        node.notify(job_id, JobState.FAILED, reason)


@dataclass
class FlowerBrandRunner:
    """Drives approved jobs through ``flwr run`` on the brand's SuperLink."""

    flower: LocalFlower
    timeout: float = 600.0
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, node: PecNode, job: JobRecord) -> None:
        """Run ``job`` in a background thread."""
        thread = threading.Thread(target=self._run, args=(node, job), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, node: PecNode, job: JobRecord) -> None:
        spec = JobSpec.model_validate(job.spec)
        if spec.kind not in RUNNABLE:
            _fail(node, job.job_id, f"job kind {spec.kind.value} cannot run over Flower yet")
            return
        folder = node.job_dir(job.job_id)
        node.store.update(job.job_id, state=JobState.RUNNING, progress=0.1)
        config = {
            "job-id": job.job_id,
            "table": str(folder / "input.csv"),
            "keys": keys_text(spec),
            "reveal": spec.kind.psi_reveal.value,
            "out": str(folder / "out"),
            "timeout": int(self.timeout),
        }
        try:
            run_id = self.flower.launch(config)
        except PartyError as exc:
            _fail(node, job.job_id, f"the Flower run did not start: {exc}")
            return
        node.store.add_event(job.job_id, "flower_run", {"run_id": run_id})
        node.store.update(job.job_id, progress=0.3)
        deadline = time.monotonic() + self.timeout
        status = ""
        while time.monotonic() < deadline:
            status = self.flower.status(run_id)
            if status.startswith("finished"):
                break
            time.sleep(0.5)
        summary_path = folder / "out" / "summary.json"
        if status != "finished:completed" or not summary_path.exists():
            why = status or "no status"
            if not status.startswith("finished"):
                why = f"did not finish within {self.timeout:.0f} s"
            _fail(node, job.job_id, f"the Flower run ended {why}")
            return
        summary = json.loads(summary_path.read_text())
        metrics = {"seconds": summary.get("seconds"), "rows": summary.get("rows")}
        node.store.update(job.job_id, state=JobState.COMPLETED, progress=1.0, metrics=metrics,
                          outputs=_outputs(spec, summary))  # fmt: skip


class PartnerRelay:
    """The partner node's relay target: serves every job it approved, and nothing else."""

    def __init__(self, node: PecNode, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = 600.0) -> None:  # fmt: skip
        self.node = node
        self.timeout = timeout
        self._jobs: dict[str, tuple[PsiRelayJob, JobSpec, float]] = {}
        self._lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: no per-request logs."""

            def _reply(self, status: HTTPStatus, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                ok = self.path == "/health"
                self._reply(HTTPStatus.OK if ok else HTTPStatus.NOT_FOUND, b"ok" if ok else b"")

            def do_POST(self) -> None:
                prefix = "/relay/"
                size = int(self.headers.get("content-length") or 0)
                if not self.path.startswith(prefix) or size <= 0 or size > MAX_BODY:
                    self._reply(HTTPStatus.BAD_REQUEST, b"bad request")
                    return
                body = self.rfile.read(size)
                status, answer = relay.handle(self.path[len(prefix) :], body)
                self._reply(status, answer)

        self._http = ThreadingHTTPServer((host, port), Handler)
        self.address = f"http://{host}:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._watch = threading.Thread(target=self._expire, daemon=True)
        self._stopped = threading.Event()

    def serve(self) -> None:
        """Start serving in background threads."""
        self._thread.start()
        self._watch.start()

    def stop(self) -> None:
        """Stop serving; jobs still open are failed."""
        self._stopped.set()
        self._http.shutdown()
        self._http.server_close()

    def start(self, node: PecNode, job: JobRecord) -> None:
        """Open an approved job for its PSI rounds (the :class:`JobRunner` hook)."""
        spec = JobSpec.model_validate(job.spec)
        if spec.kind not in RUNNABLE:
            _fail(node, job.job_id, f"job kind {spec.kind.value} cannot run over Flower yet")
            return
        folder = node.job_dir(job.job_id)
        side = PsiJobSide(job_id=job.job_id, role=Role.RIGHT, table=folder / "input.csv",
                          keys=keys_text(spec), reveal=spec.kind.psi_reveal,
                          out=folder / "out")  # fmt: skip
        with self._lock:
            self._jobs[job.job_id] = (PsiRelayJob(side), spec, time.monotonic() + self.timeout)

    def handle(self, job_id: str, body: bytes) -> tuple[HTTPStatus, bytes]:
        """Answer one batch of an approved job; refuse every other job id."""
        with self._lock:
            entry = self._jobs.get(job_id)
        if entry is None:
            return HTTPStatus.FORBIDDEN, b"job not approved by this partner"
        relay_job, spec, _ = entry
        try:
            job = self.node.store.get(job_id)
            if job.state is JobState.APPROVED:
                self.node.store.update(job_id, state=JobState.RUNNING, progress=0.3)
            elif job.state is not JobState.RUNNING:
                raise PartyError(f"the job is {job.state.value}")
            answer = relay_job.answer(body)
            if relay_job.done:
                summary = relay_job.complete()
                self._close(job_id)
                metrics = {"seconds": summary.get("seconds"), "rows": summary.get("rows")}
                outputs = _outputs(spec, summary)
                self.node.store.update(job_id, state=JobState.COMPLETED, progress=1.0,
                                       metrics=metrics, outputs=outputs)  # fmt: skip
            return HTTPStatus.OK, answer
        except PecError as exc:
            relay_job.abandon()
            self._close(job_id)
            _fail(self.node, job_id, f"the partner's side failed ({type(exc).__name__})",
                  tell_peer=False)  # fmt: skip
            return HTTPStatus.CONFLICT, f"{type(exc).__name__}".encode()

    def _close(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def _expire(self) -> None:
        """Fail approved jobs whose rounds did not finish in time (the brand or link died)."""
        while not self._stopped.wait(1.0):
            now = time.monotonic()
            with self._lock:
                late = [j for j, (_, _, deadline) in self._jobs.items() if deadline < now]
            for job_id in late:
                entry = self._jobs.get(job_id)
                if entry is not None:
                    entry[0].abandon()
                self._close(job_id)
                _fail(self.node, job_id, f"no rounds finished within {self.timeout:.0f} s",
                      tell_peer=True)  # fmt: skip
