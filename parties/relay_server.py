"""The partner's relay target: its own long-running process that holds data, keys and state.

A stock Flower SuperNode runs whatever ClientApp the brand's app bundle ships. So that code never
touches the partner's data, the ClientApp is a thin relay: it POSTs each message's bytes to this
server on loopback and returns the answer. This process — the partner's installed, pinned PEC —
reads the partner's table, keeps the protocol state between round trips, and answers only for
jobs the partner approved (here: the job it was started for). Refusals carry a short reason
written by this server, never data. The job is anything with the :class:`RelayJob` shape: a PSI
job (:class:`PsiRelayJob`) or a VFL job (:class:`parties.vfl_job.VflRelayJob`).

Endpoints: ``POST /relay/{job_id}`` (body: a frame batch, answer: a frame batch),
``GET /health``.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from parties.errors import PartyError
from parties.psi_job import PsiJobSide
from parties.stream import BatchesOnStream
from pec.errors import PecError
from psi.rounds import PsiResponder

__all__ = ["OverlapBelowMinimum", "PsiRelayJob", "RelayJob", "RelayServer"]


class OverlapBelowMinimum(PartyError):
    """The partner withholds a PSI's last reply: the overlap is below its grant's minimum."""


MAX_BODY = 1 << 30


class RelayJob(Protocol):
    """One approved job as the relay server drives it."""

    job_id: str

    def answer(self, body: bytes) -> bytes:
        """The reply to one request (raises a PecError to refuse it)."""

    @property
    def done(self) -> bool:
        """True once the job's protocol has finished on this side."""

    def complete(self) -> dict[str, Any]:
        """Write this side's outputs; returns its summary."""

    def abandon(self) -> None:
        """Release resources after a failure; nothing is written."""


class PsiRelayJob(BatchesOnStream):
    """A PSI job's responding side.

    The brand's first batch may come wrapped with a stream offer
    (:func:`parties.stream.pack_offer`): the reply to it goes back over Flower, wrapped with this
    side's fresh certificate, and every later batch arrives on the direct stream, which this side
    dials. ``min_overlap`` is the
    partner's policy: when this side learns the overlap before the brand (the count and row
    modes), a count below it withholds the last reply (:class:`OverlapBelowMinimum`), on either
    transport.
    """

    def __init__(self, side: PsiJobSide, *, min_overlap: int = 0, timeout: float = 600.0) -> None:
        self.side = side
        self.job_id = side.job_id
        self.min_overlap = min_overlap
        self.timeout = timeout
        self._responder: PsiResponder | None = None

    def answer_batch(self, body: bytes) -> bytes:
        """Feed one frame batch to the PSI party.

        Raises:
            OverlapBelowMinimum: the last reply is withheld.
            PecError: a protocol violation in the batch.
        """
        if self._responder is None:
            self._responder = PsiResponder(self.side.party())
        reply = self._responder.answer(body)
        found = self.intersection
        if found is not None and found < self.min_overlap:
            raise OverlapBelowMinimum(
                f"the overlap is below the partner's minimum ({self.min_overlap})"
            )
        return reply

    @property
    def done(self) -> bool:
        """True once the PSI party has its result."""
        return self._responder is not None and self._responder.party.done

    @property
    def intersection(self) -> int | None:
        """The intersection size, once done, in the modes where this side learns it."""
        if not self.done:
            return None
        assert self._responder is not None
        return self._responder.party.result().intersection

    def complete(self) -> dict[str, Any]:
        """Write the matched rows and the summary."""
        assert self._responder is not None
        return self.side.finish(self._responder.party.result())

    def abandon(self) -> None:
        """Release the PSI workers."""
        self.side.abandon()


class RelayServer:
    """Serves one approved job until it completes (or fails), then stops."""

    def __init__(self, job: RelayJob | PsiJobSide, host: str = "127.0.0.1", port: int = 0) -> None:
        self.job: RelayJob = PsiRelayJob(job) if isinstance(job, PsiJobSide) else job
        self.outcome: str | None = None
        self.summary: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.finished = threading.Event()
        if hasattr(self.job, "on_finished"):  # a job that can continue on a direct stream
            self.job.on_finished = self._finished_elsewhere
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Silence per-request logging (paths carry job ids only, but keep it quiet)."""

            def _reply(self, status: HTTPStatus, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._reply(HTTPStatus.OK, b"ok")
                else:
                    self._reply(HTTPStatus.NOT_FOUND, b"not found")

            def do_POST(self) -> None:
                prefix = "/relay/"
                if not self.path.startswith(prefix):
                    self._reply(HTTPStatus.NOT_FOUND, b"not found")
                    return
                job_id = self.path[len(prefix) :]
                size = int(self.headers.get("content-length") or 0)
                if size <= 0 or size > MAX_BODY:
                    self._reply(HTTPStatus.BAD_REQUEST, b"missing or oversized body")
                    return
                body = self.rfile.read(size)
                status, answer = server.handle(job_id, body)
                kind = "application/octet-stream" if status is HTTPStatus.OK else "text/plain"
                self._reply(status, answer, kind)

        self._http = ThreadingHTTPServer((host, port), Handler)
        self.address = f"http://{host}:{self._http.server_address[1]}"

    def handle(self, job_id: str, body: bytes) -> tuple[HTTPStatus, bytes]:
        """Answer one batch for ``job_id``; refuse jobs this partner did not approve."""
        if job_id != self.job.job_id:
            return HTTPStatus.FORBIDDEN, b"job not approved by this partner"
        with self._lock:
            if self.finished.is_set():
                return HTTPStatus.CONFLICT, b"job already finished"
            try:
                answer = self.job.answer(body)
                if self.job.done:
                    self.summary = self.job.complete()
                    self.outcome = "completed"
                    self.finished.set()
                return HTTPStatus.OK, answer
            except PecError as exc:
                self.job.abandon()
                self.outcome = f"failed: {type(exc).__name__}"
                self.finished.set()
                return HTTPStatus.CONFLICT, f"{type(exc).__name__}: {exc}".encode()[:500]

    def _finished_elsewhere(self, error: BaseException | None) -> None:
        """The job ended on its direct stream: publish or abandon, as after a relayed reply."""
        with self._lock:
            if self.finished.is_set():
                return
            if error is None and self.job.done:
                try:
                    self.summary = self.job.complete()
                    self.outcome = "completed"
                except PecError as exc:
                    self.outcome = f"failed: {type(exc).__name__}"
            else:
                self.job.abandon()
                self.outcome = f"failed: {type(error).__name__ if error else 'stream closed'}"
            self.finished.set()

    def serve(self, timeout: float) -> str:
        """Serve until the job finishes or ``timeout`` seconds pass; returns the outcome."""
        thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        thread.start()
        try:
            self.finished.wait(timeout)
        finally:
            self._http.shutdown()
            self._http.server_close()
        return self.outcome or "timed out"
