"""A partner whose policy's minimum overlap is above the real one releases nothing (two nodes)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from parties.local_flower import free_port
from tests.parties.node_helpers import POLICY, make_homes
from tests.parties.test_node_e2e import COMPLIANCE, _wait_ended, running, submit_overlap

pytestmark = pytest.mark.e2e


def test_an_overlap_below_the_partners_minimum_is_withheld(tmp_path: Path) -> None:
    homes = make_homes(tmp_path, brand_port=free_port(), partner_port=free_port(),
                       superlink=f"127.0.0.1:{free_port()}")  # fmt: skip
    # 10 consented people are shared; the partner wants at least 11 before it releases anything
    (homes.partner / "policy.toml").write_text(
        POLICY.replace("min_overlap = 5", "min_overlap = 11")
    )
    with running(tmp_path, homes) as cluster:
        done, _ = submit_overlap(cluster)
        assert done.returncode == 1, done.stdout + done.stderr
        job = json.loads(done.stdout)
        assert job["state"] == "failed"
        theirs = _wait_ended(cluster.partner_url, job["job_id"])
        assert theirs["state"] == "failed"
        assert "below the partner's minimum (11)" in str(theirs["reason"])
        assert "10" not in str(theirs["reason"])  # the withheld count is not told
        manifest = httpx.get(f"{cluster.brand_url}/jobs/{job['job_id']}/manifest",
                             headers=COMPLIANCE, timeout=30).json()  # fmt: skip
        assert manifest["outputs"] in ({}, None)
        assert not list((homes.brand / "jobs" / job["job_id"]).rglob("summary.json"))
