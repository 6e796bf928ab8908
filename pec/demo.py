"""``pec demo``: what a newcomer runs first — two nodes, six clean-room jobs between them.

1. Generates a dataset (:mod:`pec.datagen`): the brand's historical leads with outcomes, its new
   leads, the partner's tag table, and both sides' consent events.
2. Sets up two node homes (``DIR/brand-node``, ``DIR/partner-node``), each with its own identity,
   SQLite databases and consent ledger: the brand registers its leads, new leads and lost leads,
   the partner its people with the feature columns it lets models use and a policy granting the
   brand the six jobs. Each side imports its consent events into its own ledger and verifies it.
3. Starts both nodes as separate OS processes (``pec node start``, loopback only, fresh API
   tokens that exist only in the processes' environment), then submits the six jobs through the
   brand node's HTTP API, one after the other, and follows their progress:

   * overlap: PSI cardinality on phone OR email; neither side learns any row;
   * lead scoring: "speed" and "revenue" models, vertical federated logistic regression over the
     nodes' Flower deployment with Paillier-encrypted gradients, then a 0-1 score per consented
     new lead per model, written to the brand's ``lead_scores`` table;
   * lookalike: a model on the partner's tags trained with the brand's "premium" outcome as the
     seed; the partner scores its population, the brand sees the score distribution and takes
     the best tenth of the people it does not have; the audience stays with the partner;
   * enrichment: labeled PSI; the brand receives the partner's allowed tags for its matched
     customers;
   * aggregate: of the brand's lost leads, how many bought which competitor brand in which price
     tier, and their shares (PSI + Paillier; small cells suppressed);
   * matching: only the partner (media side) learns the matched set, for delivery.

   Every node cuts its input to the cohort its own ledger consents for the job's purpose and the
   other side as recipient; the partner checks each proposal against its policy.
4. Collects each job's audit manifest from both nodes and has each node verify its own cohorts
   against its ledger; writes ``demo.json``, ``manifests/<job>.json`` and a self-contained
   ``report.html`` (:mod:`pec.report`) that reads the nodes' job folders; stops both nodes.

The expected overlap is recomputed from the two consented inputs in plaintext (which only a demo
has side by side) and printed next to the PSI's answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pec.errors import PecError
from psi.normalize import KeyKind, NormalizationRules, normalize_column

__all__ = [
    "BRAND_FEATURES", "JOB_PURPOSES", "PARTNER_FEATURES", "DemoNode", "expected_overlap",
    "run_demo",
]  # fmt: skip

JOB_PURPOSES = {
    "overlap": "analytics.overlap",
    "lead_scoring": "marketing.lead_scoring",
    "lookalike": "marketing.lookalike",
    "enrichment": "marketing.enrichment",
    "aggregate": "analytics.aggregate",
    "matching": "third_party.matching",
}
"""The purpose each job is consented for (the brand's leads for the partner, and back)."""
BRAND_FEATURES = ("web_visits", "test_drive", "days_since_contact")
PARTNER_FEATURES = (
    "income_level", "car_insurance", "insurance_claims", "car_transactions", "car_app_minutes",
)  # fmt: skip
LABELS = ("speed", "revenue")
SEED_LABEL = "premium"
ENRICHMENT_TAGS = ("income_level", "car_insurance")
AGGREGATE_GROUP = "competitor_brand*competitor_tier"
"""The aggregate's cells: competitor brand crossed with price tier (a crossing the partner's
policy allows by name)."""
MIN_CELL = 20
_PAIRS = (("phone", "mobile", KeyKind.PHONE), ("email", "email", KeyKind.EMAIL))
_ANY_KEY = [{"brand": b, "partner": p, "kind": k.value} for b, p, k in _PAIRS]
_PHONE = _ANY_KEY[:1]
_READY_SECONDS = 120.0
_JOB_SECONDS = 900.0

Progress = Callable[[str, str, int, int], None]


def expected_overlap(brand: pd.DataFrame, partner: pd.DataFrame) -> int:
    """Brand rows that share a valid phone or email with some partner row (plaintext check)."""
    rules = NormalizationRules()
    hit = pd.Series(False, index=range(len(brand)))
    for mine_col, theirs_col, kind in _PAIRS:
        mine = normalize_column(brand[mine_col], kind, rules).values.reset_index(drop=True)
        theirs = set(normalize_column(partner[theirs_col], kind, rules).values.dropna())
        hit |= mine.isin(theirs) & mine.notna()
    return int(hit.sum())


@dataclass
class DemoNode:
    """One node of the demo: its home, API and the process running it."""

    name: str
    role: str
    home: Path
    port: int
    log: Path
    tokens: dict[str, str] = field(default_factory=dict, repr=False)
    """Role -> bearer token; fresh per run, held only here and in the node's environment."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The node's API on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def headers(self, role: str) -> dict[str, str]:
        """The bearer header of one of the node's roles."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def start(self) -> None:
        """Start ``pec node start`` for this home in its own process group."""
        digests = {hashlib.sha256(t.encode()).hexdigest(): r for r, t in self.tokens.items()}
        bin_dir = str(Path(sys.executable).parent)
        env = os.environ | {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PEC_API_TOKENS": json.dumps(digests),
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
        }
        env.pop("PEC_API_CONSENT_DB", None)
        env.pop("PEC_API_NODE_DB", None)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pec", "node", "start", "--home", str(self.home),
                 "--job-timeout", str(int(_JOB_SECONDS))],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home,
            )  # fmt: skip

    def wait_ready(self, timeout: float = _READY_SECONDS) -> None:
        """Wait for ``/health``; the node's last log line in the error if it stops or stalls."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise PecError(f"the {self.role} node stopped while starting: {self._last_log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise PecError(f"the {self.role} node did not answer within {timeout:.0f} s ({self.log})")

    def stop(self) -> None:
        """SIGTERM the node's process group (it stops its Flower processes), then SIGKILL."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def _last_log(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][:300] if lines else "no output"


def _stop_leftovers(out: Path) -> None:
    """Stop nodes a previous, killed run of the demo in ``out`` left running (by recorded PID)."""
    record = out / "nodes.json"
    try:
        pids = json.loads(record.read_text())
    except (OSError, ValueError):
        return
    for home, pid in pids.items():
        try:
            cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"node" in cmdline and home.encode() in cmdline:  # not a reused PID
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{int(pid)}").exists():
                    break
                time.sleep(0.2)
    record.unlink(missing_ok=True)


def _policy(brand: str) -> str:
    """The partner's policy: the six jobs for this brand, with their outputs and minimums."""
    outputs = ["count", "per_key", "metrics", "scores", "distribution", "audience_size",
               *[f"tags:{t}" for t in ENRICHMENT_TAGS], f"aggregate:{AGGREGATE_GROUP}"]  # fmt: skip
    return (
        "# written by pec demo: what this partner lets the brand do\n"
        "[[grants]]\n"
        f'brand = "{brand}"\n'
        f"purposes = {json.dumps(sorted(set(JOB_PURPOSES.values())))}\n"
        f"job_kinds = {json.dumps(list(JOB_PURPOSES))}\n"
        f"outputs = {json.dumps(outputs)}\n"
        "min_cohort = 200\n"
        "min_overlap = 100\n"
        f"min_cell = {MIN_CELL}\n"
    )


def _homes(out: Path, data: Path) -> tuple[DemoNode, DemoNode]:
    """Two fresh node homes that know each other, with datasets, policy and free ports."""
    from parties.config import Dataset, NodeConfig, NodeRole, Peer, init_node
    from parties.identity import NodeIdentity
    from parties.local_flower import free_port
    from pec.datagen import BRAND_ID, PARTNER_ID

    nodes = {}
    for name, role in ((BRAND_ID, "brand"), (PARTNER_ID, "partner")):
        home = out / f"{role}-node"
        shutil.rmtree(home, ignore_errors=True)
        port = free_port()
        init_node(home, name, NodeRole(role), api_port=port)
        tokens = {r: secrets.token_urlsafe(24) for r in ("modeler", "compliance")}
        nodes[role] = DemoNode(name, role, home, port, out / "logs" / f"{role}-node.log", tokens)
    brand, partner = nodes["brand"], nodes["partner"]
    superlink = f"127.0.0.1:{free_port()}"
    for me, peer in ((brand, partner), (partner, brand)):
        config = NodeConfig.load(me.home)
        config.add_peer(Peer(name=peer.name, role=NodeRole(peer.role), address=peer.url,
                             public_key=NodeIdentity.load(peer.home).public_text))  # fmt: skip
        config.flower.superlink = superlink
        if me is brand:
            tables = (("leads", "brand_leads.csv"), ("new_leads", "brand_new_leads.csv"),
                      ("lost_leads", "brand_lost_leads.csv"))  # fmt: skip
            for dataset, file in tables:
                config.datasets[dataset] = Dataset(path=str(data / file), subject_column="lead_id")
        else:
            config.datasets["people"] = Dataset(path=str(data / "partner_tags.csv"),
                                                subject_column="person_id",
                                                features=list(PARTNER_FEATURES))  # fmt: skip
        config.save(me.home)
    (partner.home / "policy.toml").write_text(_policy(brand.name))
    return brand, partner


def _import_consent(home: Path, events: Path) -> dict[str, Any]:
    """Import one side's consent events into its node's ledger (atomic) and verify the ledger."""
    from consent.ledger import ConsentLedger

    ledger = ConsentLedger.open(home)
    try:
        imported = ledger.import_file(events)
        verified = ledger.verify()
    finally:
        ledger.close()
    return {"events": imported.appended, "verified": verified.ok,
            "tree_size": verified.entries_checked}  # fmt: skip


def _specs(brand: DemoNode, partner: DemoNode, key_bits: int,
           audience_size: int) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The six job specs, as a modeler would write them (datasets by name, never paths)."""
    common = {"partner": partner.name, "brand_dataset": "leads", "partner_dataset": "people"}
    return {
        "overlap": common | {"kind": "overlap", "keys": _ANY_KEY, "outputs": ["count", "per_key"]},
        "lead_scoring": common | {
            "kind": "lead_scoring", "keys": _PHONE, "labels": list(LABELS),
            "features": list(BRAND_FEATURES), "score_dataset": "new_leads",
            "scores_table": "lead_scores", "outputs": ["metrics", "scores"], "key_bits": key_bits,
        },
        "lookalike": common | {
            "kind": "lookalike", "keys": _PHONE, "labels": [SEED_LABEL],
            "audience_size": audience_size, "min_cell": MIN_CELL, "key_bits": key_bits,
            "outputs": ["distribution", "audience_size", "metrics"],
        },
        "enrichment": common | {
            "kind": "enrichment", "keys": _ANY_KEY,
            "outputs": [f"tags:{t}" for t in ENRICHMENT_TAGS],
        },
        "aggregate": common | {
            "kind": "aggregate", "brand_dataset": "lost_leads", "keys": _PHONE,
            "outputs": [f"aggregate:{AGGREGATE_GROUP}"], "min_cell": MIN_CELL,
        },
        "matching": common | {"kind": "matching", "keys": _ANY_KEY, "outputs": ["count"]},
    }  # fmt: skip


def _get(node: DemoNode, path: str, role: str) -> dict[str, Any]:
    import httpx

    answer = httpx.get(f"{node.url}{path}", headers=node.headers(role), timeout=60)
    if answer.status_code != 200:
        raise PecError(f"the {node.role} node answered {answer.status_code} to GET {path}")
    body: dict[str, Any] = answer.json()
    return body


def _wait_ended(node: DemoNode, job_id: str, on_progress: Callable[[float], None],
                timeout: float) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _get(node, f"/jobs/{job_id}", "compliance")
        on_progress(float(job.get("progress") or 0.0))
        if job["state"] in ("completed", "failed", "rejected"):
            return job
        if node.proc is not None and node.proc.poll() is not None:
            raise PecError(f"the {node.role} node stopped during job {job_id} ({node.log})")
        time.sleep(0.5)
    raise PecError(f"job {job_id} did not end within {timeout:.0f} s on the {node.role} node")


def _run_job(
    brand: DemoNode, partner: DemoNode, name: str, spec: dict[str, Any], note: Progress
) -> dict[str, Any]:
    """Submit one job to the brand node, follow it to its end, collect both sides' records."""
    import httpx

    started = time.monotonic()
    answer = httpx.post(f"{brand.url}/jobs", json=spec, headers=brand.headers("modeler"),
                        timeout=300)  # fmt: skip
    if answer.status_code not in (200, 201):
        raise PecError(f"job {name}: the brand node refused it ({answer.status_code}: "
                       f"{answer.text[:300]})")  # fmt: skip
    job_id = str(answer.json()["job_id"])
    job = _wait_ended(brand, job_id, lambda f: note("jobs", name, int(f * 100), 100),
                      _JOB_SECONDS + 60)  # fmt: skip
    if job["state"] != "completed":
        raise PecError(f"job {name} ({job_id}) {job['state']}: {job.get('reason')}")
    theirs = _wait_ended(partner, job_id, lambda f: None, 120)
    if theirs["state"] != "completed":
        raise PecError(f"job {name} ({job_id}) {theirs['state']} at the partner: "
                       f"{theirs.get('reason')}")  # fmt: skip
    seconds = round(time.monotonic() - started, 1)
    result = _get(brand, f"/jobs/{job_id}/result", "modeler")
    return {
        "job_id": job_id,
        "seconds": seconds,
        "outputs": result["outputs"],
        "metrics": result["metrics"],
        "partner_outputs": _get(partner, f"/jobs/{job_id}/result", "modeler")["outputs"],
        "brand_folder": str(brand.home / "jobs" / job_id),
        "partner_folder": str(partner.home / "jobs" / job_id),
        "manifest": _get(brand, f"/jobs/{job_id}/manifest", "compliance"),
        "partner_manifest": _get(partner, f"/jobs/{job_id}/manifest", "compliance"),
        "verification": {
            "brand": _get(brand, f"/jobs/{job_id}/manifest/verify", "compliance"),
            "partner": _get(partner, f"/jobs/{job_id}/manifest/verify", "compliance"),
        },
    }


@contextlib.contextmanager
def _running(out: Path, nodes: tuple[DemoNode, DemoNode]) -> Iterator[None]:
    """Both nodes up for the block, stopped by PID afterwards whatever happens."""
    try:
        for node in reversed(nodes):  # the partner first: its SuperNode waits for the SuperLink
            node.start()
        (out / "nodes.json").write_text(
            json.dumps({str(n.home): n.proc.pid for n in nodes if n.proc is not None})
        )
        for node in nodes:
            node.wait_ready()
        yield
    finally:
        for node in nodes:
            node.stop()
        (out / "nodes.json").unlink(missing_ok=True)


def _cohorts(record: dict[str, Any]) -> dict[str, Any]:
    """What a job's consent cut kept and excluded, on each side (from the brand's manifest)."""
    cohorts = record["manifest"]["cohorts"]
    brand, partner = cohorts.get("brand", {}), cohorts.get("partner", {})
    return {
        "purpose": brand.get("purpose"),
        "eligible": brand.get("eligible"),
        "excluded": brand.get("excluded", {}),
        "brand_rows": brand.get("dataset_rows"),
        "rows_used": brand.get("input_rows"),
        "partner_rows": partner.get("dataset_rows"),
        "partner_rows_used": partner.get("input_rows"),
        "tree_head": brand.get("tree_head"),
        "verified": all(v["ok"] for v in record["verification"].values()),
    }


def run_demo(
    out: Path,
    *,
    brand_rows: int = 10_000,
    new_leads: int = 2_000,
    partner_rows: int = 30_000,
    seed: int = 7,
    key_bits: int = 2048,
    progress: Progress | None = None,
    announce: Callable[[str], None] = lambda line: None,
    hold: Callable[[DemoNode, DemoNode], None] | None = None,
) -> dict[str, Any]:
    """Generate the data, set up and start both nodes, run the six jobs, write the report.

    ``hold`` is called with both nodes still running once the report is written (``pec demo
    --keep-running``); they are stopped when it returns. Returns the summary (``demo.json``).

    Raises:
        PecError: a node did not start, or a job was refused or failed (the reason names it).
    """
    from pec.datagen import DatasetSpec, generate_dataset

    note = progress or (lambda role, stage, done, total: None)
    out.mkdir(parents=True, exist_ok=True)
    _stop_leftovers(out)
    for stale in ("demo.json", "report.html"):  # a failed run leaves nothing that looks complete
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "manifests", ignore_errors=True)
    data = out / "data"
    spec = DatasetSpec(
        brand_leads=brand_rows, new_leads=new_leads, partner_population=partner_rows, seed=seed
    )
    truth = generate_dataset(spec, data, progress=lambda t, d, n: note("data", t, d, n))
    leads = pd.read_csv(data / "brand_leads.csv", dtype=str, keep_default_na=False)
    leads[leads["lost"] == "1"].to_csv(data / "brand_lost_leads.csv", index=False)
    announce(
        f"generated {brand_rows:,} brand leads, {new_leads:,} new leads, {partner_rows:,} partner "
        f"people and {truth['consent_events'] + truth['partner_consent_events']:,} consent "
        f"events in {data}"
    )
    brand, partner = _homes(out, data)
    consent = {
        "brand": _import_consent(brand.home, data / "brand_consent.csv"),
        "partner": _import_consent(partner.home, data / "partner_consent.csv"),
    }
    for side, c in consent.items():
        announce(f"{side} node ledger: {c['events']:,} consent events imported, verified "
                 f"({'ok' if c['verified'] else 'FAILED'})")  # fmt: skip
    audience_size = max(partner_rows // 10, 1)
    specs = _specs(brand, partner, key_bits, audience_size)
    for job, spec_ in specs.items():
        spec_["purpose"] = JOB_PURPOSES[job]
    records: dict[str, dict[str, Any]] = {}
    with _running(out, (brand, partner)):
        announce(f"brand node {brand.name} on {brand.url}, partner node {partner.name} on "
                 f"{partner.url} (logs in {out / 'logs'})")  # fmt: skip
        for job, spec_ in specs.items():
            announce(f"job {job}: submitted to the brand node ({JOB_PURPOSES[job]})")
            records[job] = _run_job(brand, partner, job, spec_, note)
            announce(f"job {job}: completed in {records[job]['seconds']:.0f} s "
                     f"({records[job]['job_id']})")  # fmt: skip
        result = _summary(out, records, consent, brand, partner, brand_rows=brand_rows,
                          new_leads=new_leads, partner_rows=partner_rows)  # fmt: skip
        if hold is not None:
            hold(brand, partner)
    return result


def _summary(
    out: Path,
    records: dict[str, dict[str, Any]],
    consent: dict[str, Any],
    brand: DemoNode,
    partner: DemoNode,
    **sizes: int,
) -> dict[str, Any]:
    """``demo.json``, the manifests and ``report.html`` from the jobs' records."""
    overlap = records["overlap"]
    inputs = [pd.read_csv(Path(overlap[f]) / "input.csv", dtype=str, keep_default_na=False)
              for f in ("brand_folder", "partner_folder")]  # fmt: skip
    expected = expected_overlap(*inputs)
    lead, lal = records["lead_scoring"], records["lookalike"]
    models = lead["outputs"]["metrics"]["models"]
    audience, holdout = lal["outputs"]["audience"], lal["outputs"]["metrics"]["holdout"]
    aggregate = records["aggregate"]["outputs"]["aggregate"]
    brand_summary = json.loads((Path(overlap["brand_folder"]) / "out" / "summary.json").read_text())
    partner_summary = json.loads(
        (Path(overlap["partner_folder"]) / "out" / "summary.json").read_text()
    )
    matching = records["matching"]
    result = sizes | {
        "nodes": {
            n.role: {"name": n.name, "url": n.url, "home": str(n.home), "log": str(n.log)}
            for n in (brand, partner)
        },
        "consent": {
            "events": consent["brand"]["events"],
            "partner_events": consent["partner"]["events"],
            "verified": consent["brand"]["verified"] and consent["partner"]["verified"],
            "jobs": {job: _cohorts(r) for job, r in records.items()},
        },
        "jobs": {job: r["job_id"] for job, r in records.items()},
        "expected_overlap": expected,
        "overlap": overlap["outputs"]["count"],
        "overlap_per_key": dict(
            zip((p[0] for p in _PAIRS), overlap["outputs"]["per_key"], strict=True)
        ),
        "lead_scoring": {
            "auc": {k: v["auc"] for k, v in models.items()},
            "aligned_rows": lead["outputs"]["metrics"]["aligned_rows"],
            "new_leads_scored": lead["outputs"]["scores"]["rows"],
            "new_leads_matched": lead["outputs"]["scores"]["matched"],
            "scores_table": lead["outputs"]["scores"].get("table"),
        },
        "lookalike": {
            "seed_label": SEED_LABEL,
            "aligned_rows": lal["outputs"]["metrics"]["aligned_rows"],
            "holdout_auc": holdout["auc"],
            "audience_handle": audience["handle"],
            "audience_size": audience["size"],
            "expected_lift": audience["expected_lift"],
            "top_decile_lift": (holdout.get("lift_by_decile") or [None])[0],
        },
        "enriched_rows": records["enrichment"]["outputs"]["enrichment"]["rows"],
        "matched_partner_rows": matching["partner_outputs"].get("count"),
        "lost_leads": records["aggregate"]["manifest"]["cohorts"]["brand"]["input_rows"],
        "lost_leads_known": aggregate["intersection"],
        "competitor_cells": aggregate["cells"],
        "competitor_shares": aggregate["shares"],
        "invalid_keys": {"brand": brand_summary["invalid"], "partner": partner_summary["invalid"]},
        "manifests_verified": all(c["verified"] for c in map(_cohorts, records.values())),
        "seconds": {job: r["seconds"] for job, r in records.items()},
        "outputs": {
            "lead_scores": lead["outputs"]["scores"]["file"],
            "lookalike": str(Path(lal["brand_folder"]) / "out"),
            "enrichment": records["enrichment"]["outputs"]["enrichment"]["file"],
            "aggregate": aggregate["file"],
            "matching": str(Path(matching["partner_folder"]) / "out" / "right.csv"),
            "audience": str(Path(lal["partner_folder"]) / "out" / "audience.csv"),
        },
    }
    folder = out / "manifests"
    folder.mkdir(exist_ok=True)
    manifests = {}
    for job, record in records.items():
        manifests[job] = {k: record[k] for k in ("manifest", "partner_manifest", "verification")}
        (folder / f"{job}.json").write_text(json.dumps(manifests[job], indent=2) + "\n")
    from pec.report import write_report

    folders = {job: Path(r["brand_folder"]) for job, r in records.items()}
    write_report(out, result, manifests, folders)
    result["report"] = str(out / "report.html")
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
