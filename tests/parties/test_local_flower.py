"""LocalFlower: TLS and SuperNode authentication, and stopping what a killed owner left running.

Loopback, real processes.

The SuperLink serves TLS with a certificate from the deployment's own CA and admits only
SuperNodes whose public key was registered with ``flwr supernode register``; the partner's
SuperNode verifies the SuperLink with the CA certificate and signs its requests with its key.
A PSI runs end to end in that mode; a SuperNode whose key was not registered, and one that does
not trust the SuperLink's CA, never take part.
"""

from __future__ import annotations

import stat
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

pytest.importorskip("flwr")

from parties.flower_tls import make_superlink_tls, make_supernode_key
from parties.local_flower import LocalFlower, free_port, reap_recorded


@pytest.mark.unit
def test_the_material_is_what_flower_reads(tmp_path: Path) -> None:
    tls = make_superlink_tls(tmp_path / "tls", hosts=("127.0.0.1", "brand.example"))
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["brand.example"]
    key = make_supernode_key(tmp_path / "keys")
    load_ssh_private_key(key.private_key.read_bytes(), None)
    assert key.public_key.read_text().startswith("ecdsa-sha2-nistp384 ")
    for private in (tls.key, key.private_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600


def _tables(tmp_path: Path) -> None:
    pd.DataFrame({"id": range(8), "phone": [f"1380000{i:04d}" for i in range(8)]}).to_csv(
        tmp_path / "brand.csv", index=False
    )
    pd.DataFrame({"mobile": [f"+86 1380000{i:04d}" for i in range(4, 14)]}).to_csv(
        tmp_path / "partner.csv", index=False
    )


def _start_relay(flower: LocalFlower, tmp_path: Path, job: str) -> int:
    port = free_port()
    flower.start(
        "relay",
        [sys.executable, "-m", "pec", "psi", "serve", str(tmp_path / "partner.csv"),
         "--job-id", job, "--key", "phone=mobile:phone", "--reveal", "count",
         "--out", str(tmp_path / "partner_out"), "--port", str(port), "--timeout", "300"],
    )  # fmt: skip
    flower.wait_http(f"http://127.0.0.1:{port}/health", 60, "relay")
    return port


def _nodes(flower: LocalFlower) -> list[dict[str, object]]:
    import json

    done = flower._flwr("supernode", "ls", "pec-local", "--format", "json")
    if done.returncode != 0:
        return []
    return list(json.loads(done.stdout).get("nodes", []))


@pytest.mark.integration
def test_psi_over_tls_with_a_registered_supernode(tmp_path: Path) -> None:
    _tables(tmp_path)
    tls = make_superlink_tls(tmp_path / "tls")
    key = make_supernode_key(tmp_path / "partner-keys")
    job = "job-tls-1"
    with LocalFlower(tmp_path / "run", tls=tls, supernode_auth=True, supernode_key=key) as flower:
        port = _start_relay(flower, tmp_path, job)
        flower.start_superlink()
        flower.wait_superlink()
        flower.register_supernode(key.public_key)
        flower.start_supernode(f"http://127.0.0.1:{port}")
        run_id = flower.launch(
            {"job-id": job, "table": str(tmp_path / "brand.csv"), "keys": "phone=mobile:phone",
             "reveal": "count", "out": str(tmp_path / "brand_out"), "timeout": 240}
        )  # fmt: skip
        deadline, status = time.monotonic() + 240, ""
        while time.monotonic() < deadline:
            status = flower.status(run_id)
            if status.startswith("finished"):
                break
            time.sleep(2)
        assert status == "finished:completed", (status, flower.run_log(run_id)[-3000:])
        summary = (tmp_path / "brand_out" / "summary.json").read_text()
        assert '"intersection": 4' in summary
        assert "--insecure" not in " ".join(flower.processes["superlink"].args)


def _wait_exit(flower: LocalFlower, name: str, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and flower.alive(name):
        time.sleep(0.5)
    return flower.processes[name].poll()


@pytest.mark.integration
def test_an_unregistered_supernode_is_refused(tmp_path: Path) -> None:
    tls = make_superlink_tls(tmp_path / "tls")
    stranger = make_supernode_key(tmp_path / "stranger-keys")
    with LocalFlower(
        tmp_path / "run", tls=tls, supernode_auth=True, supernode_key=stranger
    ) as flower:
        flower.start_superlink()
        flower.wait_superlink()
        flower.start_supernode("http://127.0.0.1:9")  # never reached
        code = _wait_exit(flower, "supernode", 60)
        assert code not in (None, 0), "the SuperLink let an unregistered SuperNode in"
        assert "Failed to activate SuperNode" in flower.log("supernode").read_text()
        assert not [n for n in _nodes(flower) if n.get("status") == "online"]


@pytest.mark.integration
def test_a_supernode_that_does_not_trust_the_ca_never_connects(tmp_path: Path) -> None:
    tls = make_superlink_tls(tmp_path / "tls")
    other_ca = make_superlink_tls(tmp_path / "other").ca_cert
    key = make_supernode_key(tmp_path / "partner-keys")
    with LocalFlower(tmp_path / "run", tls=tls, supernode_auth=True) as brand:
        brand.start_superlink()
        brand.wait_superlink()
        brand.register_supernode(key.public_key)
        partner = LocalFlower(
            tmp_path / "partner", superlink_port=brand.superlink_port,
            root_certificates=other_ca, supernode_key=key,
        )  # fmt: skip
        with partner:
            partner.start_supernode("http://127.0.0.1:9")
            _wait_exit(partner, "supernode", 20)
            assert not [n for n in _nodes(brand) if n.get("status") == "online"]


def _until_visible(pid: int, workdir: Path, timeout: float = 10.0) -> None:
    """Wait until /proc shows the started program in its folder (what the reaper checks).

    A fresh-clone CI run once saw the reaper find nothing right after the start, under load.
    """
    from parties.local_flower import _is_ours

    deadline = time.monotonic() + timeout
    while not _is_ours(pid, workdir) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.integration
def test_a_new_owner_stops_the_processes_a_killed_one_left_running(tmp_path: Path) -> None:
    first = LocalFlower(tmp_path / "flower")
    first.start("superlink", [sys.executable, "-c", "import time; time.sleep(120)", "pec-stub"])
    orphan = first.processes["superlink"]
    _until_visible(orphan.pid, first.workdir)
    # the owner dies without stopping its children (kill -9): a new one on the same folder
    second = LocalFlower(tmp_path / "flower")
    assert second.reap_stale() == ["superlink"]
    orphan.wait(timeout=10)
    assert orphan.returncode == -9
    assert second.reap_stale() == []  # the record is gone
    # the same, without a LocalFlower: what the two-node test harness does after each test
    second.start("supernode", [sys.executable, "-c", "import time; time.sleep(120)", "pec-stub"])
    orphan = second.processes["supernode"]
    _until_visible(orphan.pid, second.workdir)
    assert reap_recorded(tmp_path / "flower") == ["supernode"]
    orphan.wait(timeout=10)
    assert orphan.returncode == -9


@pytest.mark.unit
def test_a_recorded_pid_that_is_not_ours_is_left_alone(tmp_path: Path) -> None:
    import json
    import os

    folder = tmp_path / "flower"
    LocalFlower(folder)
    (folder / "processes.json").write_text(json.dumps({"superlink": os.getpid()}))
    assert LocalFlower(folder).reap_stale() == []  # this test's own process: another folder
