"""The partner's relay target: its own long-running process that holds data, keys and state.

A stock Flower SuperNode runs whatever ClientApp the brand's app bundle ships. So that code never
touches the partner's data, the ClientApp is a thin relay: it POSTs each message's bytes to this
server on loopback and returns the answer. This process — the partner's installed, pinned PEC —
reads the partner's table, keeps the PSI state between round trips, and answers only for jobs
the partner approved (here: the job it was started for). Refusals carry a short reason written
by this server, never data.

Endpoints: ``POST /relay/{job_id}`` (body: a frame batch, answer: a frame batch),
``GET /health``.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from parties.psi_job import PsiJobSide
from pec.errors import PecError
from psi.rounds import PsiResponder

__all__ = ["RelayServer"]

MAX_BODY = 1 << 30


class RelayServer:
    """Serves one approved PSI job until it completes (or fails), then stops."""

    def __init__(self, side: PsiJobSide, host: str = "127.0.0.1", port: int = 0) -> None:
        self.side = side
        self.outcome: str | None = None
        self.summary: dict[str, Any] | None = None
        self._responder: PsiResponder | None = None
        self._lock = threading.Lock()
        self.finished = threading.Event()
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
        if job_id != self.side.job_id:
            return HTTPStatus.FORBIDDEN, b"job not approved by this partner"
        with self._lock:
            if self.finished.is_set():
                return HTTPStatus.CONFLICT, b"job already finished"
            try:
                if self._responder is None:
                    self._responder = PsiResponder(self.side.party())
                answer = self._responder.answer(body)
                party = self._responder.party
                if party.done and not self.side.written:
                    self.summary = self.side.finish(party.result())
                    self.outcome = "completed"
                    self.finished.set()
                return HTTPStatus.OK, answer
            except PecError as exc:
                self.side.abandon()
                self.outcome = f"failed: {type(exc).__name__}"
                self.finished.set()
                return HTTPStatus.CONFLICT, f"{type(exc).__name__}: {exc}".encode()[:500]

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
