"""Two node processes over a Flower link with TLS and SuperNode authentication (loopback).

Set up as an operator would across machines: `pec node tls` on the brand (CA and SuperLink
certificate) and on the partner (the brand's CA, its own SuperNode key), the partner's SuperNode
key added to the brand's peer entry; then an overlap job through the API.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from parties.config import NodeConfig
from parties.identity import NodeIdentity
from parties.local_flower import free_port
from tests.parties.node_helpers import PARTNER, make_homes
from tests.parties.test_node_e2e import _env, running, submit_overlap

pytestmark = pytest.mark.e2e


def _pec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pec", *args], env=_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_an_overlap_job_over_tls_with_supernode_authentication(tmp_path: Path) -> None:
    brand_port, partner_port = free_port(), free_port()
    homes = make_homes(tmp_path, brand_port=brand_port, partner_port=partner_port,
                       superlink=f"127.0.0.1:{free_port()}")  # fmt: skip
    made = _pec("node", "tls", "--home", str(homes.brand), "--host", "brand.example")
    assert made.returncode == 0, made.stderr
    ca = homes.brand / "tls" / "ca.crt"
    refused = _pec("node", "tls", "--home", str(homes.partner), "--host", "x")
    assert refused.returncode == 2 and "--superlink-ca" in refused.stderr
    keyed = _pec("node", "tls", "--home", str(homes.partner), "--superlink-ca", str(ca))
    assert keyed.returncode == 0, keyed.stderr
    supernode_key = keyed.stdout.strip().splitlines()[-1]
    assert supernode_key.startswith("ecdsa-sha2-nistp384 ")
    added = _pec("node", "add-peer", "--home", str(homes.brand), "--name", PARTNER,
                 "--role", "partner", "--public-key", NodeIdentity.load(homes.partner).public_text,
                 "--address", f"http://127.0.0.1:{partner_port}",
                 "--supernode-key", supernode_key)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert NodeConfig.load(homes.brand).flower.tls and NodeConfig.load(homes.partner).flower.tls

    with running(tmp_path, homes) as cluster:
        done, env = submit_overlap(cluster)
        assert done.returncode == 0, done.stdout + done.stderr
        job = json.loads(done.stdout)
        assert job["state"] == "completed", job
        result = subprocess.run(
            [sys.executable, "-m", "pec", "job", "result", job["job_id"]],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert json.loads(result.stdout)["outputs"] == {"count": 10}  # as over plain gRPC
        groups = json.loads((homes.brand / "flower" / "processes.json").read_text())
        cmdline = Path(f"/proc/{groups['superlink']}/cmdline").read_bytes().split(b"\0")
        assert b"--enable-supernode-auth" in cmdline and b"--insecure" not in cmdline
        groups = json.loads((homes.partner / "flower" / "processes.json").read_text())
        cmdline = Path(f"/proc/{groups['supernode']}/cmdline").read_bytes().split(b"\0")
        assert b"--root-certificates" in cmdline and b"--auth-supernode-private-key" in cmdline
    for home in (homes.brand, homes.partner):  # each node stopped its own Flower processes
        for pid in json.loads((home / "flower" / "processes.json").read_text()).values():
            assert (
                not Path(f"/proc/{pid}").exists()
                or b"Z" in Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1][:3]
            )


def test_a_partner_with_an_external_supernode(tmp_path: Path) -> None:
    """The compose topology: the partner node serves its relay target on a fixed address and a
    SuperNode started elsewhere (here: by the test, in its own folder, with no node home)
    relays to it."""
    from parties.local_flower import LocalFlower

    relay_port = free_port()
    superlink = f"127.0.0.1:{free_port()}"
    homes = make_homes(tmp_path, brand_port=free_port(), partner_port=free_port(),
                       superlink=superlink)  # fmt: skip
    config = NodeConfig.load(homes.partner)
    config.flower.supernode, config.flower.relay = "external", f"127.0.0.1:{relay_port}"
    config.save(homes.partner)
    external = LocalFlower(
        tmp_path / "supernode-host", superlink_port=int(superlink.rsplit(":", 1)[1])
    )
    with running(tmp_path, homes) as cluster:
        assert "supernode" not in json.loads(
            (homes.partner / "flower" / "processes.json").read_text()
            if (homes.partner / "flower" / "processes.json").exists() else "{}"
        )  # fmt: skip
        try:
            external.start_supernode(f"http://127.0.0.1:{relay_port}")
            done, _ = submit_overlap(cluster)
            assert done.returncode == 0, done.stdout + done.stderr
            assert json.loads(done.stdout)["state"] == "completed"
        finally:
            external.stop()
