"""Two nodes as separate OS processes on loopback (`pec node start`), each with its own home and
database (the brand on PostgreSQL, the partner on SQLite), running jobs through the API over the
real Flower deployment: brand SuperLink + ServerApp, partner SuperNode + its relay target."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from parties.config import NodeConfig
from parties.local_flower import free_port, reap_recorded
from tests.parties.node_helpers import OVERLAP_SPEC, Homes, make_homes

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TOKENS = {"e2e-modeler": "modeler", "e2e-compliance": "compliance"}
MODELER = {"Authorization": "Bearer e2e-modeler"}
COMPLIANCE = {"Authorization": "Bearer e2e-compliance"}


@dataclass
class Cluster:
    brand_url: str
    partner_url: str
    root: Path
    procs: dict[str, subprocess.Popen[bytes]]

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    digests = {hashlib.sha256(t.encode()).hexdigest(): r for t, r in TOKENS.items()}
    return os.environ | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PEC_API_TOKENS": json.dumps(digests),
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
    }


def _start(root: Path, name: str, home: Path) -> subprocess.Popen[bytes]:
    with (root / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pec", "node", "start", "--home", str(home),
             "--job-timeout", "120"],
            env=_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=root,
        )  # fmt: skip


def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the node stopped while starting"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _wait_ended(url: str, job_id: str, timeout: float = 150) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}", headers=COMPLIANCE, timeout=10).json()
        if job["state"] in ("completed", "failed", "rejected"):
            return dict(job)
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not end within {timeout} s")


@contextlib.contextmanager
def running(root: Path, homes: Homes) -> Iterator[Cluster]:
    """Both nodes of ``homes`` as processes (the partner first), healthy, stopped afterwards."""
    brand, partner = (NodeConfig.load(h).api.port for h in (homes.brand, homes.partner))
    procs = {"partner": _start(root, "partner", homes.partner)}
    procs["brand"] = _start(root, "brand", homes.brand)
    cluster = Cluster(f"http://127.0.0.1:{brand}", f"http://127.0.0.1:{partner}", root, procs)
    try:
        _wait_health(cluster.partner_url, procs["partner"])
        _wait_health(cluster.brand_url, procs["brand"])
        yield cluster
    finally:
        for name in list(procs):
            cluster.stop(name)
        # A node killed with SIGKILL (by a test that then failed before restarting it, or by
        # stop() after a timeout) could not stop its Flower groups: stop them by their record.
        # A node that stopped by itself is left alone, so tests can check that it cleaned up.
        for name, home in (("brand", homes.brand), ("partner", homes.partner)):
            if procs[name].returncode == -signal.SIGKILL:
                reap_recorded(home / "flower")


def submit_overlap(cluster: Cluster) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """``pec job submit --wait`` of the overlap spec to the brand; the run and the CLI's env."""
    spec = cluster.root / "overlap.json"
    spec.write_text(json.dumps(OVERLAP_SPEC))
    env = _env() | {"PEC_API_URL": cluster.brand_url, "PEC_API_TOKEN": "e2e-modeler"}
    done = subprocess.run(
        [sys.executable, "-m", "pec", "job", "submit", str(spec), "--wait", "--timeout", "150"],
        env=env, capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    return done, env


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    homes = make_homes(tmp_path, brand_port=free_port(), partner_port=free_port(),
                       superlink=f"127.0.0.1:{free_port()}", brand_db=pg_url)  # fmt: skip
    with running(tmp_path, homes) as c:
        yield c


def test_an_overlap_job_runs_between_two_node_processes(cluster: Cluster) -> None:
    done, env = submit_overlap(cluster)

    assert done.returncode == 0, done.stdout + done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "completed"
    result = subprocess.run(
        [sys.executable, "-m", "pec", "job", "result", job["job_id"]],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # phones 20..29 are consented on both sides; the other shared phones are not
    assert json.loads(result.stdout)["outputs"] == {"count": 10}
    theirs = _wait_ended(cluster.partner_url, job["job_id"])
    assert theirs["state"] == "completed"
    for url in (cluster.brand_url, cluster.partner_url):
        manifest = httpx.get(f"{url}/jobs/{job['job_id']}/manifest", headers=COMPLIANCE).json()
        assert set(manifest["cohorts"]) == {"brand", "partner"}
        assert manifest["decisions"][0]["approved"] is True
        assert manifest["cohorts"]["brand"]["tree_head"]["tree_size"] == 30
    assert httpx.get(f"{cluster.brand_url}/jobs/{job['job_id']}/manifest",
                     headers=MODELER).status_code == 403  # fmt: skip


def test_a_policy_rejected_job_and_a_dead_partner(cluster: Cluster) -> None:
    outside = OVERLAP_SPEC | {"purpose": "marketing.lookalike"}
    rejected = httpx.post(f"{cluster.brand_url}/jobs", headers=MODELER, json=outside,
                          timeout=60).json()  # fmt: skip
    assert rejected["state"] == "rejected" and "not allowed" in rejected["reason"]

    cluster.stop("partner")
    started = time.monotonic()
    failed = httpx.post(f"{cluster.brand_url}/jobs", headers=MODELER, json=OVERLAP_SPEC,
                        timeout=60).json()  # fmt: skip

    assert failed["state"] == "failed" and "did not answer" in failed["reason"]
    assert time.monotonic() - started < 30
    assert httpx.get(f"{cluster.brand_url}/health").status_code == 200  # the brand keeps serving
