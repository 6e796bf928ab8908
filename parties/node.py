"""A party node's job service: the brand proposes, the partner decides, both keep the record.

The brand's modeler submits a :class:`~parties.jobs.JobSpec`. The brand cuts its input from its
consent ledger's cohort for (purpose, recipient = the partner), writes the consented rows to the
job's folder, and sends the partner a signed proposal (:mod:`parties.envelope`) with its cohort's
size, exclusions and signed tree head. The partner accepts the envelope only from a configured
brand peer, addressed to itself, never twice; it cuts its own cohort for (purpose, recipient = the
brand), checks the proposal against its policy (:func:`parties.jobs.evaluate`), records its
decision and answers with a signed decision. Both sides record every envelope's digest, each
state change and each decision: the job's audit manifest (:meth:`PecNode.manifest`).

What crosses between nodes: job ids, specs (dataset *names*), counts, exclusion counts, signed
tree heads, decisions with reasons. Never rows, identifiers, paths or keys. Running an approved
job is the :class:`JobRunner`'s business (the Flower deployment, :mod:`parties.node_runner`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from consent.ledger import ConsentLedger
from parties.config import NodeConfig, NodeRole, Peer
from parties.envelope import EnvelopeGuard, Sealed, open_envelope, seal
from parties.errors import (
    BadEnvelope,
    JobError,
    JobStateError,
    NodeConfigError,
    NotApproved,
    PartyError,
    PeerUnreachable,
    ReplayedMessage,
)
from parties.identity import NodeIdentity, public_key_from_text
from parties.jobs import Decision, JobKind, JobSpec, PartnerPolicy, evaluate
from parties.jobstore import JobRecord, JobState, SqlJobStore
from pec.errors import PecError

__all__ = [
    "POLICY_FILE",
    "HttpPeerTransport",
    "InMemoryPeerTransport",
    "JobRunner",
    "PecNode",
    "PeerTransport",
    "load_policy",
]

POLICY_FILE = "policy.toml"
INPUT = "input.csv"
"""A job's consented input, in its folder."""
SCORE_INPUT = "score_input.csv"
"""lead_scoring: the consented new leads to score."""
MAX_ENVELOPE = 1 << 20
PROPOSAL = "proposal"
DECISION = "decision"
JOB_STATE = "job_state"


class PeerTransport(Protocol):
    """Delivers an envelope to a peer's control plane and returns the peer's envelope."""

    def send(self, address: str, envelope: bytes) -> bytes:
        """POST ``envelope`` to ``address``; the answer's bytes.

        Raises:
            PeerUnreachable: no answer in time, or the peer refused (its code and reason).
        """


@dataclass
class HttpPeerTransport:
    """Envelopes over HTTP(S): ``POST {address}/peer/envelopes``."""

    timeout: float = 30.0

    def send(self, address: str, envelope: bytes) -> bytes:
        """POST the envelope; the peer's signed answer.

        Raises:
            PeerUnreachable: connection failure, timeout, or a refusal (with the peer's code).
        """
        import httpx

        try:
            response = httpx.post(
                f"{address.rstrip('/')}/peer/envelopes",
                content=envelope,
                headers={"content-type": "application/octet-stream"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise PeerUnreachable(f"peer did not answer ({type(exc).__name__})") from None
        if response.status_code != 200:
            try:
                code = str(response.json().get("code", "refused"))
                reason = str(response.json().get("detail", ""))[:300]
            except (ValueError, AttributeError):
                code, reason = "refused", ""
            raise PeerUnreachable(f"peer refused the message: {code}: {reason}")
        return response.content


@dataclass
class InMemoryPeerTransport:
    """The in-process twin of :class:`HttpPeerTransport`: addresses map to nodes."""

    nodes: dict[str, PecNode] = field(default_factory=dict)

    def send(self, address: str, envelope: bytes) -> bytes:
        """Hand the envelope to the node at ``address``; refusals become PeerUnreachable.

        Raises:
            PeerUnreachable: no node at ``address``, or it refused the envelope.
        """
        node = self.nodes.get(address)
        if node is None:
            raise PeerUnreachable("peer did not answer (ConnectError)")
        try:
            return node.receive(envelope)
        except PecError as exc:
            raise PeerUnreachable(f"peer refused the message: {type(exc).__name__}") from None


class JobRunner(Protocol):
    """Runs approved jobs (brand: drives them; partner: serves them)."""

    def start(self, node: PecNode, job: JobRecord) -> None:
        """Start running ``job`` in the background; report through ``node``."""


def load_policy(home: Path) -> PartnerPolicy:
    """The partner's policy from ``home/policy.toml`` (no file: nothing is allowed).

    Raises:
        NodeConfigError: the file is not valid TOML or not a valid policy.
    """
    import tomllib

    path = home / POLICY_FILE
    if not path.exists():
        return PartnerPolicy()
    try:
        return PartnerPolicy.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise NodeConfigError(f"{path}: not a valid policy ({type(exc).__name__})") from None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class PecNode:
    """One node: its config, identity, job store, consent ledger, policy and peers."""

    home: Path
    config: NodeConfig
    identity: NodeIdentity
    store: SqlJobStore
    ledger: ConsentLedger
    transport: PeerTransport = field(default_factory=HttpPeerTransport)
    runner: JobRunner | None = None
    policy: PartnerPolicy = field(default_factory=PartnerPolicy)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @classmethod
    def open(
        cls,
        home: Path,
        ledger: ConsentLedger,
        db_url: str | None = None,
        *,
        transport: PeerTransport | None = None,
        runner: JobRunner | None = None,
    ) -> PecNode:
        """Open the node at ``home`` (job database: ``db_url``, node.toml's, or SQLite there).

        Raises:
            NodeConfigError: the home, its key, its policy or the database URL is not usable.
        """
        from parties.jobstore import default_url

        config = NodeConfig.load(home)
        store = SqlJobStore.open(db_url or config.database.url or default_url(home))
        return cls(
            home=home,
            config=config,
            identity=NodeIdentity.load(home),
            store=store,
            ledger=ledger,
            transport=transport or HttpPeerTransport(),
            runner=runner,
            policy=load_policy(home),
        )

    @property
    def name(self) -> str:
        """The node's name."""
        return self.config.node.name

    @property
    def role(self) -> NodeRole:
        """The node's role: brand or partner."""
        return self.config.node.role

    def job_dir(self, job_id: str) -> Path:
        """Where a job's consented input and outputs live on this node."""
        return self.home / "jobs" / job_id

    # -- reading -------------------------------------------------------------------------------

    def job(self, job_id: str) -> JobRecord:
        """One job (raises UnknownJob)."""
        return self.store.get(job_id)

    def jobs(self, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Jobs, newest first."""
        return self.store.recent(limit=limit, offset=offset)

    def result(self, job_id: str) -> JobRecord:
        """A completed job's outputs.

        Raises:
            UnknownJob: no such job.
            JobStateError: the job has not completed (no partial output is ever published).
        """
        job = self.store.get(job_id)
        if job.state is not JobState.COMPLETED:
            raise JobStateError(f"job {job_id!r} has no result ({job.state.value})")
        return job

    def manifest(self, job_id: str) -> dict[str, Any]:
        """The job's audit manifest: spec, cohorts, decisions, message digests, outputs, times."""
        job = self.store.get(job_id)
        events = self.store.events(job_id)
        return {
            "type": "pec.job.manifest",
            "job_id": job.job_id,
            "node": self.name,
            "node_fingerprint": self.identity.fingerprint,
            "side": job.side,
            "peer": job.peer,
            "spec": job.spec,
            "state": job.state.value,
            "reason": job.reason,
            "cohorts": {
                str(e["detail"].get("side")): e["detail"] for e in events if e["kind"] == "cohort"
            },
            "decisions": [e["detail"] | {"at": e["at"]} for e in events if e["kind"] == "decision"],
            "messages": self.store.messages(job_id),
            "events": events,
            "metrics": job.metrics,
            "outputs": job.outputs,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
        }

    def verify_manifest(self, job_id: str) -> dict[str, Any]:
        """Check this node's cohorts in a job's manifest against its consent ledger now.

        For each cohort this node cut (brand: ``brand`` and ``brand_score``; partner:
        ``partner``): the recorded tree head is signed by this ledger's key, the ledger still
        holds a head of that size with that root, the latest head is consistent with it (RFC 9162
        consistency proof), and cutting the cohort again at the recorded time gives the same
        eligible count, exclusions and subject-list digest. A mismatch means the log was
        rewritten, or events dated before the cut were recorded after it. The peer's cohort is
        signed by the peer's ledger key, which only the peer's auditor holds: it is not checked.
        """
        from consent.merkle import verify_consistency
        from consent.tree_head import SignedTreeHead

        manifest = self.manifest(job_id)
        mine = ("brand", "brand_score") if manifest["side"] == "brand" else ("partner",)
        checks = []
        for side, cohort in manifest["cohorts"].items():
            if side not in mine:
                continue
            check: dict[str, Any] = {"side": side, "purpose": cohort.get("purpose")}
            try:
                head = SignedTreeHead.from_dict(cohort["tree_head"])
            except (KeyError, TypeError, ValueError):
                checks.append(check | {"ok": False, "problem": "no readable tree head"})
                continue
            check["tree_size"] = head.tree_size
            check["signature"] = head.verify(self.ledger.keys.public_key)
            held = self.ledger.store.tree_head(head.tree_size)
            check["head_in_ledger"] = held is not None and held.root_hash == head.root_hash
            latest = self.ledger.tree_head()
            consistent = False
            if latest is not None and check["head_in_ledger"]:
                proof = self.ledger.consistency_proof(head.tree_size, latest.tree_size)
                consistent = verify_consistency(
                    head.tree_size, latest.tree_size, head.root_hash, latest.root_hash,
                    [bytes.fromhex(h) for h in proof["proof"]],
                )  # fmt: skip
            check["consistent_with_latest"] = consistent
            again = self.ledger.cohort(
                str(cohort["purpose"]), str(cohort["recipient"]),
                at=datetime.fromisoformat(str(cohort["at"])),
            )  # fmt: skip
            check["cohort_reproduced"] = (
                again.eligible == cohort["eligible"]
                and again.excluded == cohort["excluded"]
                and again.subjects_sha256 == cohort["subjects_sha256"]
            )
            check["ok"] = all(
                check[k]
                for k in (
                    "signature",
                    "head_in_ledger",
                    "consistent_with_latest",
                    "cohort_reproduced",
                )
            )
            checks.append(check)
        return {
            "type": "pec.job.manifest.verification",
            "job_id": job_id,
            "node": self.name,
            "ok": bool(checks) and all(c["ok"] for c in checks),
            "checks": checks,
            "verified_at": self.clock().isoformat(),
        }

    def recover(self) -> list[str]:
        """Settle jobs a previous run of this node left unfinished; returns their ids.

        Their Flower run or relay state died with the old process, so each is failed with a
        reason (no partial output is published) and the peer is told, best effort.
        """
        settled = []
        for job in self.store.unfinished():
            reason = f"the node restarted while the job was {job.state.value}"
            try:
                self.store.update(job.job_id, state=JobState.FAILED, reason=reason)
            except JobStateError:
                continue  # ended meanwhile
            self.notify(job.job_id, JobState.FAILED, reason)
            settled.append(job.job_id)
        return settled

    # -- brand: submit -------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> JobRecord:
        """Record a job, cut the consented input and propose it to the partner.

        Returns the job after the partner's decision (``approved`` or ``rejected``), or
        ``failed`` with a reason when the partner could not be reached.

        Raises:
            JobError: this node is not a brand, or the partner is not a configured partner peer.
            NodeConfigError: the brand dataset is not registered.
        """
        if self.role is not NodeRole.BRAND:
            raise JobError("only a brand node submits jobs")
        peer = next((p for p in self.config.peers if p.name == spec.partner), None)
        if peer is None or peer.role is not NodeRole.PARTNER or not peer.address:
            raise JobError(f"{spec.partner!r} is not a partner peer with an address on this node")
        dataset = self.config.dataset(spec.brand_dataset)
        if spec.scores_table:
            from parties.outputs import check_scores_table

            check_scores_table(self.config, self.home, spec.scores_table)
        job_id = uuid.uuid4().hex
        body = spec.model_dump(mode="json")
        self.store.create(job_id, side="brand", peer=peer.name, spec=body, state=JobState.PROPOSED)
        try:
            cohort = self._cohort(job_id, "brand", spec.purpose, peer.name, spec.brand_dataset,
                                  dataset.subject_column)  # fmt: skip
            if spec.score_dataset:  # new leads to score: consent-cut like the training input
                scoring = self.config.dataset(spec.score_dataset)
                self._cohort(job_id, "brand_score", spec.purpose, peer.name,
                             spec.score_dataset, scoring.subject_column,
                             filename=SCORE_INPUT)  # fmt: skip
        except PecError as exc:
            return self.store.update(job_id, state=JobState.FAILED, reason=_short(exc))
        payload = json.dumps({"spec": body, "brand": self.name, "cohort": cohort}).encode()
        try:
            answer = self._send(peer, job_id, PROPOSAL, payload)
            decision = self._decision(peer, job_id, answer)
        except PartyError as exc:
            return self.store.update(job_id, state=JobState.FAILED, reason=_short(exc))
        self.store.add_event(job_id, "decision", decision["decision"])
        if "cohort" in decision:
            self.store.add_event(job_id, "cohort", decision["cohort"] | {"side": "partner"})
        verdict = Decision.model_validate(decision["decision"])
        if not verdict.approved:
            reason = "rejected by the partner: " + "; ".join(verdict.reasons)
            return self.store.update(job_id, state=JobState.REJECTED, reason=reason)
        job = self.store.update(job_id, state=JobState.APPROVED)
        if self.runner is not None:
            self.runner.start(self, job)
        return self.store.get(job_id)

    def notify(self, job_id: str, state: JobState, reason: str = "") -> None:
        """Tell the peer that a job ended on this side (best effort; recorded when delivered)."""
        job = self.store.get(job_id)
        peer = next((p for p in self.config.peers if p.name == job.peer), None)
        if peer is None or not peer.address:
            return
        payload = json.dumps({"state": state.value, "reason": reason}).encode()
        try:
            self._send(peer, job_id, JOB_STATE, payload)
        except PartyError:
            self.store.add_event(job_id, "notify_failed", {"state": state.value})

    def _send(self, peer: Peer, job_id: str, kind: str, payload: bytes) -> bytes:
        seq = self.store.next_seq(job_id, self.identity.fingerprint)
        envelope = seal(self.identity, recipient=peer.fingerprint, job_id=job_id, seq=seq,
                        kind=kind, payload=payload, now=self.clock)  # fmt: skip
        self.store.record_message(job_id, sender=self.identity.fingerprint, seq=seq,
                                  direction="out", kind=kind, sha256=_digest(envelope))  # fmt: skip
        return self.transport.send(peer.address, envelope)

    def _decision(self, peer: Peer, job_id: str, answer: bytes) -> dict[str, Any]:
        sealed = open_envelope(answer[:MAX_ENVELOPE], public_key_from_text(peer.public_key))
        if sealed.recipient != self.identity.fingerprint or sealed.job_id != job_id:
            raise BadEnvelope("the decision is not for this job")
        if sealed.kind != DECISION:
            raise BadEnvelope("the partner's answer is not a decision")
        self._record_in(sealed, answer)
        try:
            data = json.loads(sealed.payload)
            Decision.model_validate(data["decision"])
        except (ValueError, KeyError, TypeError, ValidationError):
            raise BadEnvelope("the partner's decision is malformed") from None
        if not isinstance(data, dict):
            raise BadEnvelope("the partner's decision is malformed")
        return data

    # -- both: incoming envelopes --------------------------------------------------------------

    def receive(self, envelope: bytes) -> bytes:
        """Accept an envelope from a peer and answer it with a signed envelope.

        Raises:
            UnknownNode: the sender is not a configured peer.
            BadEnvelope: malformed, not for this node, or a bad signature.
            NotApproved: the message belongs to no job approved for the sender.
            ReplayedMessage: an envelope (or a proposal's job id) seen before.
        """
        if len(envelope) > MAX_ENVELOPE:
            raise BadEnvelope("envelope too large")
        peers = {p.fingerprint: p for p in self.config.peers}
        guard = EnvelopeGuard(
            me=self.identity.fingerprint,
            peers={fp: public_key_from_text(p.public_key) for fp, p in peers.items()},
            approved=lambda job_id, sender: self._may_receive(job_id, peers[sender]),
        )
        sealed = guard.accept(envelope)
        peer = peers[sealed.sender]
        if sealed.kind == PROPOSAL:
            return self._on_proposal(peer, sealed, envelope)
        if sealed.kind == JOB_STATE:
            return self._on_job_state(peer, sealed, envelope)
        raise BadEnvelope("unexpected message kind")

    def _may_receive(self, job_id: str, peer: Peer) -> bool:
        job = self.store.find(job_id)
        if job is None:
            # Only a proposal may name a new job, and only from a brand to a partner.
            return self.role is NodeRole.PARTNER and peer.role is NodeRole.BRAND
        return job.peer == peer.name

    def _record_in(self, sealed: Sealed, envelope: bytes) -> None:
        self.store.record_message(sealed.job_id, sender=sealed.sender, seq=sealed.seq,
                                  direction="in", kind=sealed.kind,
                                  sha256=_digest(envelope))  # fmt: skip

    def _on_proposal(self, peer: Peer, sealed: Sealed, envelope: bytes) -> bytes:
        if self.store.find(sealed.job_id) is not None:
            raise ReplayedMessage(f"job {sealed.job_id!r} was already proposed")
        try:
            data = json.loads(sealed.payload)
            spec = JobSpec.model_validate(data["spec"])
            declared = int(data["cohort"]["input_rows"])
        except (ValueError, KeyError, TypeError, ValidationError):
            raise BadEnvelope("the proposal is malformed") from None
        body = spec.model_dump(mode="json")
        self.store.create(sealed.job_id, side="partner", peer=peer.name, spec=body,
                          state=JobState.PROPOSED)  # fmt: skip
        self._record_in(sealed, envelope)
        self.store.add_event(sealed.job_id, "cohort", dict(data["cohort"]) | {"side": "brand"})
        reasons: list[str] = []
        mine: dict[str, Any] | None = None
        if spec.partner != self.name:
            reasons.append("the proposal names another partner")
        elif spec.partner_dataset not in self.config.datasets:
            reasons.append(f"no dataset named {spec.partner_dataset!r} on the partner")
        else:
            dataset = self.config.datasets[spec.partner_dataset]
            try:
                mine = self._cohort(sealed.job_id, "partner", spec.purpose, peer.name,
                                    spec.partner_dataset, dataset.subject_column)  # fmt: skip
            except PecError as exc:
                reasons.append(f"the partner cannot cut its consent cohort: {_short(exc)}")
        if reasons:
            decision = Decision(approved=False, reasons=reasons)
        else:
            assert mine is not None
            day_ago = (self.clock() - timedelta(days=1)).isoformat()
            aggregates = self.store.approved_for(peer.name, kind=JobKind.AGGREGATE.value)
            decision = evaluate(
                self.policy, peer.name, spec, brand_cohort=declared,
                partner_cohort=int(mine["input_rows"]),
                approved_last_day=len(self.store.approved_for(peer.name, since=day_ago)),
                epsilon_spent=sum(float(j.spec.get("epsilon") or 0.0) for j in aggregates),
            )  # fmt: skip
        self.store.add_event(sealed.job_id, "decision", decision.model_dump())
        state = JobState.APPROVED if decision.approved else JobState.REJECTED
        job = self.store.update(sealed.job_id, state=state, reason="; ".join(decision.reasons))
        answer: dict[str, Any] = {"decision": decision.model_dump()}
        if mine is not None:
            answer["cohort"] = {k: v for k, v in mine.items() if k != "side"}
        reply = self._reply(sealed, DECISION, json.dumps(answer).encode())
        if decision.approved and self.runner is not None:
            self.runner.start(self, job)
        return reply

    def _on_job_state(self, peer: Peer, sealed: Sealed, envelope: bytes) -> bytes:
        if self.store.find(sealed.job_id) is None:
            raise NotApproved(f"no approved job {sealed.job_id!r} for this sender")
        self._record_in(sealed, envelope)
        try:
            data = json.loads(sealed.payload)
            state = JobState(data["state"])
            reason = str(data.get("reason", ""))[:500]
        except (ValueError, KeyError, TypeError):
            raise BadEnvelope("the job state message is malformed") from None
        self.store.add_event(sealed.job_id, "peer_state", {"state": state.value, "reason": reason})
        job = self.store.get(sealed.job_id)
        if state is JobState.FAILED and not job.state.terminal:
            self.store.update(sealed.job_id, state=JobState.FAILED,
                              reason=f"{peer.name} reported: {reason}")  # fmt: skip
        return self._reply(sealed, "ack", b"{}")

    def _reply(self, sealed: Sealed, kind: str, payload: bytes) -> bytes:
        seq = self.store.next_seq(sealed.job_id, self.identity.fingerprint)
        envelope = seal(self.identity, recipient=sealed.sender, job_id=sealed.job_id, seq=seq,
                        kind=kind, payload=payload, now=self.clock)  # fmt: skip
        self.store.record_message(sealed.job_id, sender=self.identity.fingerprint, seq=seq,
                                  direction="out", kind=kind, sha256=_digest(envelope))  # fmt: skip
        return envelope

    # -- consent -------------------------------------------------------------------------------

    def _cohort(
        self,
        job_id: str,
        side: str,
        purpose: str,
        recipient: str,
        dataset: str,
        column: str,
        *,
        filename: str = INPUT,
    ) -> dict[str, Any]:
        """Cut the cohort, write the consented rows of ``dataset``, record and return the counts.

        Raises:
            PecError: the ledger refuses the query, or the table or its column is unreadable.
        """
        keys: set[str] = set()
        snapshot = self.ledger.cohort(purpose, recipient, sink=keys.add)
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        rows = kept = 0
        with (folder / filename).open("w", newline="", encoding="utf-8") as handle:
            writer: Any = None
            for chunk in self.config.dataset_chunks(self.home, dataset):
                if column not in chunk.columns:
                    raise NodeConfigError(f"dataset has no subject column {column!r}")
                if writer is None:
                    writer = csv.writer(handle)
                    writer.writerow(list(chunk.columns))
                subjects = chunk[column].tolist()
                mask = [bool(s) and self.ledger.subject_key(s) in keys for s in subjects]
                rows += len(subjects)
                kept += sum(mask)
                writer.writerows(chunk[mask].itertuples(index=False, name=None))
        head = snapshot.tree_head
        summary = {
            "side": side,
            "purpose": purpose,
            "recipient": recipient,
            "at": snapshot.at.isoformat(),
            "eligible": snapshot.eligible,
            "excluded": snapshot.excluded,
            "subjects_sha256": snapshot.subjects_sha256,
            "tree_head": head.to_dict() if head else None,
            "dataset_rows": rows,
            "input_rows": kept,
            "rows_without_consent": rows - kept,
        }
        self.store.add_event(job_id, "cohort", summary)
        return summary


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
