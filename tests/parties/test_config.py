import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from parties import Dataset, NodeConfig, NodeConfigError, NodeIdentity, NodeRole, Peer, init_node


@pytest.mark.unit
def test_init_creates_key_and_config(tmp_path: Path) -> None:
    config = init_node(tmp_path / "brand", "acme-brand", NodeRole.BRAND, api_port=8711)
    key = tmp_path / "brand" / "keys" / "node_ed25519.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    loaded = NodeConfig.load(tmp_path / "brand")
    assert loaded == config and loaded.api.port == 8711
    assert NodeIdentity.load(tmp_path / "brand").fingerprint
    with pytest.raises(NodeConfigError, match="already holds a node"):
        init_node(tmp_path / "brand", "again", NodeRole.BRAND)


@pytest.mark.unit
def test_peers_and_datasets(tmp_path: Path) -> None:
    config = init_node(tmp_path, "brand", NodeRole.BRAND)
    partner = NodeIdentity.generate()
    config.add_peer(Peer(name="insurer", role=NodeRole.PARTNER, public_key=partner.public_text))
    config.datasets["leads"] = Dataset(path="data/leads.csv")
    config.save(tmp_path)
    loaded = NodeConfig.load(tmp_path)
    assert loaded.peer(partner.fingerprint).name == "insurer"
    assert loaded.dataset_path(tmp_path, "leads") == tmp_path / "data" / "leads.csv"
    with pytest.raises(NodeConfigError, match="no dataset named 'other'"):
        loaded.dataset_path(tmp_path, "other")
    with pytest.raises(NodeConfigError, match="already uses this public key"):
        loaded.add_peer(Peer(name="twin", role=NodeRole.PARTNER, public_key=partner.public_text))


@pytest.mark.unit
def test_bad_config_names_file_and_field(tmp_path: Path) -> None:
    init_node(tmp_path, "brand", NodeRole.BRAND)
    path = tmp_path / "node.toml"
    path.write_text(path.read_text().replace('role = "brand"', 'role = "boss"'))
    with pytest.raises(NodeConfigError, match=r"node\.toml: field node\.role"):
        NodeConfig.load(tmp_path)
    path.write_text("not = [toml")
    with pytest.raises(NodeConfigError, match="not valid TOML"):
        NodeConfig.load(tmp_path)
    with pytest.raises(ValueError, match="32 bytes"):
        Peer(name="x", role=NodeRole.PARTNER, public_key="abc")


@pytest.mark.e2e
def test_node_cli(tmp_path: Path) -> None:
    def pec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pec", "node", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    brand, partner = tmp_path / "brand", tmp_path / "partner"
    assert pec("init", "--home", str(brand), "--name", "acme", "--role", "brand").returncode == 0
    shown = pec("init", "--home", str(partner), "--name", "ins", "--role", "partner")
    assert shown.returncode == 0
    partner_key = NodeIdentity.load(partner).public_text
    assert partner_key in shown.stdout
    added = pec(
        "add-peer",
        "--home",
        str(brand),
        "--name",
        "ins",
        "--role",
        "partner",
        "--public-key",
        partner_key,
        "--address",
        "http://127.0.0.1:8701",
    )
    assert added.returncode == 0, added.stderr
    (tmp_path / "leads.csv").write_text("id\n1\n")
    no_subject = pec("add-dataset", "--home", str(brand), "leads", str(tmp_path / "leads.csv"))
    assert no_subject.returncode == 2 and "no column 'subject_id'" in no_subject.stderr
    ds = pec("add-dataset", "--home", str(brand), "leads", str(tmp_path / "leads.csv"),
             "--subject-column", "id")  # fmt: skip
    assert ds.returncode == 0, ds.stderr
    show = pec("show", "--home", str(brand))
    assert "ins" in show.stdout and "leads" in show.stdout
    assert "PRIVATE" not in show.stdout
    bad = pec("add-dataset", "--home", str(brand), "x", str(tmp_path / "missing.csv"))
    assert bad.returncode == 2 and "not found" in bad.stderr
    again = pec("init", "--home", str(brand), "--name", "acme", "--role", "brand")
    assert again.returncode == 2 and "already holds a node" in again.stderr
