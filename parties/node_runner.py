"""Running approved jobs over the Flower deployment, from inside a node's process.

Brand (:class:`FlowerBrandRunner`): for each approved job, ``flwr run`` the PEC app on the
brand's own SuperLink with the job's consented input (``jobs/<id>/input.csv``) and polls the run;
the ServerApp drives the PSI rounds. Partner (:class:`PartnerRelay`): the partner node's own
loopback relay target. Its SuperNode's ClientApp (brand-supplied code) only relays bytes here;
this process holds the consented input, the PSI state and the keys, and answers only jobs the
partner approved (``POST /relay/{job_id}``; anything else gets 403).

Both sides end a job within a bounded time: ``completed`` with the declared outputs only, or
``failed`` with a reason and nothing published. Job kinds run today: ``overlap`` and ``matching``
(PSI) and ``lead_scoring`` (the VFL job of :mod:`federated.job`, as ``pec vfl local`` runs it:
same ServerApp, relay and direct stream; the partner's features are the ones its dataset
registration lists). The other kinds are refused at start with a reason.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from federated.model import OptimizerConfig, OptimizerKind
from federated.partner import PartnerConfig
from parties.aggregate_job import AggregateRelayJob
from parties.errors import PartyError
from parties.jobs import JobKind, JobSpec
from parties.jobstore import JobRecord, JobState
from parties.local_flower import LocalFlower
from parties.lookalike_job import LookalikeRelayJob
from parties.node import INPUT, SCORE_INPUT, PecNode
from parties.psi_job import PsiJobSide
from parties.relay_server import MAX_BODY, OverlapBelowMinimum, PsiRelayJob, RelayJob
from parties.stream import BatchesOnStream
from parties.vfl_job import VflRelayJob
from pec.errors import PecError
from pec.psi_local import parse_key_spec
from pec.vfl_tables import load_party_table
from psi.wire import Role

__all__ = ["FlowerBrandRunner", "PartnerRelay", "keys_text"]

MODEL_KINDS = frozenset({JobKind.LEAD_SCORING, JobKind.LOOKALIKE})
SCORES = "scores.csv"
"""lead_scoring: a 0-1 score per consented new lead per model, on the brand node only."""


def keys_text(spec: JobSpec) -> str:
    """The PSI key specs of a job (``brand=partner:kind``, ``;``-separated)."""
    return ";".join(f"{k.brand}={k.partner}:{k.kind.value}" for k in spec.keys)


def tags(spec: JobSpec) -> tuple[str, ...]:
    """The partner columns an enrichment job asks for (its ``tags:<column>`` outputs)."""
    return tuple(o.split(":", 1)[1] for o in spec.outputs if o.startswith("tags:"))


def _group(spec: JobSpec) -> str:
    """The partner column an aggregate job counts by (its ``aggregate:<column>`` output)."""
    return next((o.split(":", 1)[1] for o in spec.outputs if o.startswith("aggregate:")), "")


def _outputs(spec: JobSpec, summary: dict[str, Any], folder: Path | None = None) -> dict[str, Any]:
    """Only the outputs the spec declared (and the policy allowed)."""
    out: dict[str, Any] = {}
    if "count" in spec.outputs:
        out["count"] = summary.get("intersection")
    if "per_key" in spec.outputs:
        out["per_key"] = summary.get("per_key")
    group = _group(spec)
    if group and folder is not None:  # on the brand node: counts per group, small ones withheld
        out["aggregate"] = {
            "group": group,
            "cells": summary.get("cells"),
            "shares": summary.get("shares"),
            "intersection": summary.get("intersection"),
            "suppressed": summary.get("suppressed"),
            "file": str(folder / "out" / "aggregate.csv"),
        }
    if tags(spec) and folder is not None and "left.csv" in summary.get("outputs", []):
        out["enrichment"] = {  # on the brand node: its matched rows with the allowed tags
            "file": str(folder / "out" / "left.csv"),
            "rows": summary.get("intersection"),
            "tags": list(tags(spec)),
        }
    return out


def _fail(
    node: PecNode, job_id: str, reason: str, *, tell_peer: bool = True, peer_reason: str = ""
) -> None:
    try:
        node.store.update(job_id, state=JobState.FAILED, reason=reason)
    except PartyError:
        return  # already ended
    if tell_peer:
        node.notify(job_id, JobState.FAILED, peer_reason or reason)


def _vfl_config(
    job_id: str, spec: JobSpec, folder: Path, timeout: float, stream_host: str = "127.0.0.1"
) -> dict[str, Any]:
    """The run config of a lead-scoring job's ServerApp (defaults as ``pec vfl local``)."""
    key = spec.keys[0]
    score = folder / SCORE_INPUT
    if spec.kind is JobKind.LOOKALIKE:
        lookalike: dict[str, Any] = {"kind": "lookalike", "bands": spec.bands,
                                     "min-cell": spec.min_cell or 20}  # fmt: skip
        if spec.audience_size is not None:
            lookalike["audience-size"] = spec.audience_size
        else:
            lookalike["threshold"] = float(spec.audience_threshold or 0.0)
    return {
        "kind": "vfl",
        "job-id": job_id,
        "table": str(folder / INPUT),
        "id-column": key.brand,
        "id-kind": key.kind.value,
        "labels": ";".join(spec.labels),
        "features": ";".join(spec.features),
        "test-table": str(score) if spec.score_dataset and score.exists() else "",
        "out": str(folder / "out"),
        "key-bits": spec.key_bits,
        "timeout": float(timeout),
        "progress-file": str(folder / "progress.jsonl"),
        "transport": "stream" if stream_host else "flower",
        "stream-host": stream_host or "127.0.0.1",
    } | (lookalike if spec.kind is JobKind.LOOKALIKE else {})


def _vfl_outputs(
    node: PecNode, spec: JobSpec, folder: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics and the declared outputs of a finished lead-scoring job, on the brand node.

    ``scores``: every consented new lead gets a 0-1 score per model (federated when the partner
    knows the lead, else the brand's part: :mod:`federated.scoring`), in ``scores.csv`` beside
    the job, keyed by the score dataset's subject column; the file never leaves the brand.
    """
    import pandas as pd

    from federated.scoring import score_all_leads

    metrics: dict[str, Any] = json.loads((folder / "out" / "metrics.json").read_text())
    summary = {
        "aligned_rows": metrics.get("aligned_rows"),
        "train_rows": metrics.get("train_rows"),
        "evaluated_on": metrics.get("evaluated_on"),
        "evaluation_rows": metrics.get("test_rows"),
        "seconds": metrics.get("seconds"),
        "models": {
            label: {k: m.get(k) for k in ("auc", "ks", "lift_by_decile", "epochs", "best_epoch")}
            for label, m in metrics.get("models", {}).items()
        },
    }
    outputs: dict[str, Any] = {}
    if "metrics" in spec.outputs:
        outputs["metrics"] = summary
    if "scores" in spec.outputs and spec.score_dataset and (folder / SCORE_INPUT).exists():
        subject = node.config.datasets[spec.score_dataset].subject_column
        leads = pd.read_csv(folder / SCORE_INPUT, dtype=str, keep_default_na=False)
        scores = score_all_leads(folder / "out", leads, spec.keys[0].brand, keep=(subject,))
        scores.to_csv(folder / SCORES, index=False)
        outputs["scores"] = {
            "file": str(folder / SCORES),
            "rows": len(scores),
            "matched": int(scores["matched"].sum()),
            "columns": list(scores.columns),
        }
        if spec.scores_table:  # the table the modeler named, in the brand node's own database
            from parties.outputs import write_scores_table

            write_scores_table(node.config, node.home, spec.scores_table, scores,
                               subject=subject, job_id=folder.name)  # fmt: skip
            outputs["scores"]["table"] = spec.scores_table
    return summary, outputs


def _lookalike_outputs(spec: JobSpec, folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the brand keeps of a finished lookalike job: never an audience member."""
    summary: dict[str, Any] = json.loads((folder / "out" / "lookalike.json").read_text())
    audience, holdout = summary["audience"], summary["holdout"]
    kept = ("rows", "positives", "auc", "ks", "lift_by_decile")
    metrics = {
        "aligned_rows": summary.get("aligned_rows"),
        "holdout": {k: holdout.get(k) for k in kept},
    }
    outputs: dict[str, Any] = {}
    if "distribution" in spec.outputs:
        outputs["distribution"] = summary["distribution"]
    if "audience_size" in spec.outputs:
        fields = ("handle", "size", "cut_score", "expected_lift", "where")
        outputs["audience"] = {k: audience.get(k) for k in fields}
    if "metrics" in spec.outputs:
        outputs["metrics"] = metrics
    return metrics, outputs


def _subjects(table: Path, key: str, subject: str) -> Any:
    """The subject id of each key value of a consented input (the first row's, for a repeat)."""
    import pandas as pd

    rows = pd.read_csv(table, usecols=[key, subject], dtype=str, keep_default_na=False)
    rows = rows[rows[key] != ""].drop_duplicates(subset=key)
    return pd.Series(rows[subject].to_numpy(), index=rows[key].to_numpy(), name=subject)


def _progress(path: Path) -> float | None:
    """The brand's latest progress line as a 0.3-0.9 fraction of the job."""
    try:
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        last = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None
    if not last or not last.get("total"):
        return None
    return 0.3 + 0.6 * min(1.0, float(last["done"]) / float(last["total"]))


#: How often a running job's outputs and progress are looked at, and how often ``flwr ls`` is
#: asked whether the run failed.
POLL_SECONDS = 0.25
STATUS_EVERY = 5.0


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

    def _follow(
        self, node: PecNode, job_id: str, run_id: str, done: Path, progress: Path | None
    ) -> str:
        """Wait for the run to finish; its last status (empty if it never answered).

        The ServerApp publishes ``done`` last, so its appearance is the cheap sign of the end.
        ``flwr ls`` starts a Python process (about a second of CPU on this project's 2-core
        machine): it is asked every ``STATUS_EVERY`` seconds for a failed run, and then only to
        confirm the end once ``done`` exists.
        """
        deadline = time.monotonic() + self.timeout
        status, next_status, shown = "", 0.0, -1.0
        while time.monotonic() < deadline:
            finished_output = done.exists()
            if finished_output or time.monotonic() >= next_status:
                status = self.flower.status(run_id)
                if status.startswith("finished"):
                    return status
                next_status = time.monotonic() + STATUS_EVERY
            fraction = _progress(progress) if progress is not None else None
            if fraction is not None and fraction != shown:
                node.store.update(job_id, progress=round(fraction, 3))
                shown = fraction
            time.sleep(POLL_SECONDS)
        return status

    def _run(self, node: PecNode, job: JobRecord) -> None:
        spec = JobSpec.model_validate(job.spec)
        folder = node.job_dir(job.job_id)
        node.store.update(job.job_id, state=JobState.RUNNING, progress=0.1)
        model = spec.kind in MODEL_KINDS
        if model:
            config = _vfl_config(job.job_id, spec, folder, self.timeout,
                                 node.config.flower.stream_host)  # fmt: skip
        else:
            config = {
                "job-id": job.job_id,
                "table": str(folder / INPUT),
                "keys": keys_text(spec),
                "reveal": spec.kind.psi_reveal.value,
                "out": str(folder / "out"),
                "timeout": int(self.timeout),
                "labeled": spec.kind is JobKind.ENRICHMENT,
            }
            if spec.kind is JobKind.AGGREGATE:
                config["kind"] = "aggregate"
            # the first round trip offers a direct stream; the others go over it
            stream_host = node.config.flower.stream_host
            config["transport"] = "stream" if stream_host else "flower"
            config["stream-host"] = stream_host or "127.0.0.1"
        try:
            run_id = self.flower.launch(config)
        except PartyError as exc:
            _fail(node, job.job_id, f"the Flower run did not start: {exc}")
            return
        node.store.add_event(job.job_id, "flower_run", {"run_id": run_id})
        node.store.update(job.job_id, progress=0.3)
        done_file = {JobKind.LEAD_SCORING: "metrics.json", JobKind.LOOKALIKE: "lookalike.json"}
        summary_path = folder / "out" / done_file.get(spec.kind, "summary.json")
        status = self._follow(node, job.job_id, run_id, summary_path,
                              folder / "progress.jsonl" if model else None)  # fmt: skip
        if status != "finished:completed" or not summary_path.exists():
            why = status or "no status"
            if not status.startswith("finished"):
                why = f"did not finish within {self.timeout:.0f} s"
            _fail(node, job.job_id, f"the Flower run ended {why}")
            return
        if model:
            try:
                if spec.kind is JobKind.LOOKALIKE:
                    metrics, outputs = _lookalike_outputs(spec, folder)
                else:
                    metrics, outputs = _vfl_outputs(node, spec, folder)
            except (PecError, OSError, ValueError, KeyError) as exc:
                _fail(node, job.job_id, f"the results could not be written ({type(exc).__name__})")
                return
            node.store.update(job.job_id, state=JobState.COMPLETED, progress=1.0,
                              metrics=metrics, outputs=outputs)  # fmt: skip
            return
        summary = json.loads(summary_path.read_text())
        metrics = {"seconds": summary.get("seconds"), "rows": summary.get("rows")}
        node.store.update(job.job_id, state=JobState.COMPLETED, progress=1.0, metrics=metrics,
                          outputs=_outputs(spec, summary, folder))  # fmt: skip


class PartnerRelay:
    """The partner node's relay target: serves every job it approved, and nothing else."""

    def __init__(self, node: PecNode, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = 600.0) -> None:  # fmt: skip
        self.node = node
        self.timeout = timeout
        self._jobs: dict[str, tuple[RelayJob, JobSpec, float]] = {}
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
        folder = node.job_dir(job.job_id)
        relay_job: RelayJob
        if spec.kind in MODEL_KINDS:
            try:
                relay_job = self._vfl_job(node, job.job_id, spec, folder)
            except (PecError, ValueError) as exc:
                _fail(node, job.job_id, f"the partner's model input is not usable: {exc}",
                      peer_reason="the partner's model input is not usable")  # fmt: skip
                return
        else:
            grant = node.policy.grant_for(job.peer)
            batches: BatchesOnStream
            if spec.kind is JobKind.AGGREGATE:
                batches = AggregateRelayJob(
                    job.job_id, folder / INPUT, parse_key_spec(keys_text(spec)), _group(spec),
                    folder / "out",
                    min_cell=max(grant.min_cell if grant else 20, spec.min_cell or 0),
                    epsilon=spec.epsilon,
                )  # fmt: skip
            else:
                side = PsiJobSide(job_id=job.job_id, role=Role.RIGHT, table=folder / INPUT,
                                  keys=keys_text(spec), reveal=spec.kind.psi_reveal,
                                  out=folder / "out", payload=tags(spec))  # fmt: skip
                # the partner knows the overlap before the brand does (count and row modes):
                # below its grant's minimum, it withholds the last reply and nothing is released
                batches = PsiRelayJob(side, min_overlap=grant.min_overlap if grant else 0)
            batches.timeout = self.timeout
            job_id = job.job_id
            batches.on_finished = lambda error: self._finished_on_stream(job_id, error)
            relay_job = batches
        with self._lock:
            self._jobs[job.job_id] = (relay_job, spec, time.monotonic() + self.timeout)

    def _vfl_job(self, node: PecNode, job_id: str, spec: JobSpec, folder: Path) -> VflRelayJob:
        """The partner's side of a model job: its consented rows, its chosen features.

        Lookalike: the rows are the whole consented population, which the partner scores; the
        audience is written into the partner's job folder and never leaves it.

        Raises:
            PecError: the partner registered no features, or its input is not usable.
        """
        dataset = node.config.datasets[spec.partner_dataset]
        if not dataset.features:
            raise PartyError(f"dataset {spec.partner_dataset!r} lists no feature columns")
        key = spec.keys[0]
        job = node.store.get(job_id)
        grant = node.policy.grant_for(job.peer)
        table = load_party_table(folder / INPUT, key.partner, role="partner",
                                 features=dataset.features, id_kind=key.kind.value)  # fmt: skip
        config = PartnerConfig(
            optimizer=OptimizerConfig(kind=OptimizerKind.NESTEROV, learning_rate=1.0,
                                      momentum=0.7, l2=1e-4),
            min_key_bits=2048,
            workers=2,
            min_aligned_rows=grant.min_overlap if grant else 0,
        )  # fmt: skip
        relay_job: VflRelayJob
        if spec.kind is JobKind.LOOKALIKE:  # the population: every consented person of the partner
            min_cell = max(grant.min_cell if grant else 20, spec.min_cell or 0)
            relay_job = LookalikeRelayJob(job_id, table, folder / "out", config=config,
                                          min_cell=min_cell,
                                          subjects=_subjects(folder / INPUT, key.partner,
                                                             dataset.subject_column))  # fmt: skip
        else:
            test = table if spec.score_dataset else None  # new leads: looked up in the same rows
            relay_job = VflRelayJob(job_id, table, folder / "out", test=test, config=config)
        relay_job.timeout = self.timeout
        relay_job.on_finished = lambda error: self._finished_on_stream(job_id, error)
        return relay_job

    def _finished_on_stream(self, job_id: str, error: BaseException | None) -> None:
        """A job that moved to its direct stream ended there: publish or fail, as in handle."""
        with self._lock:
            entry = self._jobs.pop(job_id, None)
        if entry is None:
            return
        relay_job, spec, _ = entry
        if error is None and relay_job.done:
            try:
                summary = relay_job.complete()
            except PecError as exc:
                _fail(self.node, job_id, f"the partner's outputs failed ({type(exc).__name__})")
                return
            if isinstance(relay_job, BatchesOnStream):  # PSI, aggregate: as over Flower
                kept = _outputs(spec, summary)
            else:
                kept = {"model": "kept by the partner"}
            if isinstance(relay_job, LookalikeRelayJob):
                audience = relay_job.partner_job
                kept["audience"] = {"handle": audience.audience_handle,
                                    "file": str(relay_job.out / "audience.csv")}  # fmt: skip
            self.node.store.update(job_id, state=JobState.COMPLETED, progress=1.0,
                                   metrics={"seconds": summary.get("seconds"),
                                            "rows": summary.get("rows")},
                                   outputs=kept)  # fmt: skip
            return
        relay_job.abandon()
        if isinstance(error, OverlapBelowMinimum):  # the last reply was withheld
            _fail(self.node, job_id, str(error))
            return
        if isinstance(error, PecError):  # our refusals name no data: tell the brand why
            _fail(self.node, job_id, f"the partner refused: {str(error)[:300]}")
            return
        why = type(error).__name__ if error else "the stream closed"
        _fail(self.node, job_id, f"the job's stream ended early ({why})", tell_peer=False)

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
            try:
                answer = relay_job.answer(body)
            except OverlapBelowMinimum as exc:  # the last reply is withheld; the brand is told
                relay_job.abandon()
                self._close(job_id)
                _fail(self.node, job_id, str(exc))
                return HTTPStatus.CONFLICT, str(exc).encode()
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
