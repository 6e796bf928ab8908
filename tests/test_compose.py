"""docker-compose.yml and the Dockerfile, checked statically against the real CLI and settings.

No Docker engine runs here, so this reads the files and asks the installed programs: every
command and option a service uses exists (`--help` of the very executables the image installs),
ports agree between commands, port mappings, healthchecks and the services that dial them,
environment variables name real settings, every PostgreSQL has a healthcheck that its node waits
for, the SuperNode gets no partner data, and the image copies every package.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def help_text(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def options(command: list[str]) -> list[str]:
    return [part.split("=", 1)[0] for part in command if part.startswith("--")]


def test_services_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "brand-db", "brand-node", "partner-db", "partner-node", "partner-supernode"
    }  # fmt: skip
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith("."):
                assert source in declared, f"{name} uses undeclared volume {source}"
        assert "healthcheck" in service, f"{name} has no healthcheck"


def test_each_node_has_its_own_postgres_and_waits_for_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for side in ("brand", "partner"):
        db = services[f"{side}-db"]
        assert db["image"].startswith("postgres:")
        assert db["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
        node = services[f"{side}-node"]
        assert node["depends_on"][f"{side}-db"]["condition"] == "service_healthy"
        for name in ("PEC_API_CONSENT_DB", "PEC_API_NODE_DB"):
            url = node["environment"][name]
            assert url.startswith("postgresql+psycopg://") and f"@{side}-db:5432/" in url


def test_node_services_run_the_real_node_command(compose: dict[str, Any]) -> None:
    from api.settings import ApiSettings
    from pec.settings import NodeSettings

    start_help = help_text(str(BIN / "pec"), "node", "start", "--help")
    setting_names = {f"PEC_API_{f.upper()}" for f in ApiSettings.model_fields} | {
        f"PEC_{f.upper()}" for f in NodeSettings.model_fields
    }
    for side, port in (("brand", 8700), ("partner", 8701)):
        service = compose["services"][f"{side}-node"]
        command = service["command"]
        assert command[:3] == ["pec", "node", "start"]
        for option in options(command):
            assert option in start_help, option
        assert command[command.index("--home") + 1] == service["environment"]["PEC_HOME"]
        assert any(v.endswith(f":{service['environment']['PEC_HOME']}") for v in service["volumes"])
        assert f"{port}:{port}" in service["ports"]
        assert f"127.0.0.1:{port}/health" in " ".join(service["healthcheck"]["test"])
        assert set(service["environment"]) <= setting_names


def test_the_node_configuration_in_the_header_is_valid() -> None:
    """The node.toml settings the file's header tells operators to write are accepted."""
    from parties.config import FlowerSection

    header = (ROOT / "docker-compose.yml").read_text().split("\nname:")[0]
    assert 'supernode = "external"' in header and 'relay = "0.0.0.0:19201"' in header
    FlowerSection.model_validate(
        {"superlink": "0.0.0.0:9092", "stream_host": "brand-node", "tls": True}
    )
    FlowerSection.model_validate(
        {"superlink": "brand-node:9092", "supernode": "external", "relay": "0.0.0.0:19201",
         "tls": True}
    )  # fmt: skip
    for command in ("init", "tls", "add-peer"):
        help_text(str(BIN / "pec"), "node", command, "--help")
    assert "--superlink-ca" in help_text(str(BIN / "pec"), "node", "tls", "--help")
    assert "--supernode-key" in help_text(str(BIN / "pec"), "node", "add-peer", "--help")


def test_the_supernode_uses_real_options_and_dials_the_brand_with_tls(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    brand, supernode = services["brand-node"], services["partner-supernode"]
    node_help = help_text(str(BIN / "flower-supernode"), "--help")
    assert supernode["command"][0] == "flower-supernode"
    for option in options(supernode["command"]):
        assert re.search(rf"{re.escape(option)}\b", node_help), option
    node = dict(p.split("=", 1) for p in supernode["command"] if "=" in p)
    host, port = node["--superlink"].split(":")
    assert host == "brand-node" and f"{port}:{port}" in brand["ports"]
    assert f"('127.0.0.1', {port})" in " ".join(brand["healthcheck"]["test"])
    assert f"('127.0.0.1', {node['--port']})" in " ".join(supernode["healthcheck"]["test"])
    assert supernode["depends_on"]["brand-node"]["condition"] == "service_healthy"
    assert "--insecure" not in supernode["command"]
    assert node["--root-certificates"].startswith("/tls/")
    assert node["--auth-supernode-private-key"].startswith("/tls/")


def test_the_supernode_relays_to_the_partner_and_holds_no_partner_data(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    supernode, partner = services["partner-supernode"], services["partner-node"]
    config = next(p for p in supernode["command"] if p.startswith("--node-config="))
    match = re.fullmatch(r'--node-config=partner-url="http://([a-z-]+):(\d+)"', config)
    assert match and match.group(1) == "partner-node"
    assert match.group(2) in partner["expose"]
    assert supernode["depends_on"]["partner-node"]["condition"] == "service_healthy"
    # only the CA and its own key: never the partner's home, data or database
    assert all(v.startswith("./deploy/partner-tls:") for v in supernode.get("volumes", []))
    assert "environment" not in supernode


def test_the_image_installs_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["mypy"]["packages"]
    for package in packages:
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.M), package
    assert "pip install" in dockerfile and "USER pec" in dockerfile
