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
        "brand-db", "brand-api", "brand-superlink", "partner-db", "partner-api", "partner-supernode"
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
        api = services[f"{side}-api"]
        assert api["depends_on"][f"{side}-db"]["condition"] == "service_healthy"
        url = api["environment"]["PEC_API_CONSENT_DB"]
        assert url.startswith("postgresql+psycopg://") and f"@{side}-db:5432/" in url


def test_api_services_match_the_real_command_and_settings(compose: dict[str, Any]) -> None:
    from api.settings import ApiSettings
    from pec.settings import NodeSettings

    api_help = help_text(sys.executable, "-m", "api", "--help")
    setting_names = {f"PEC_API_{f.upper()}" for f in ApiSettings.model_fields} | {
        f"PEC_{f.upper()}" for f in NodeSettings.model_fields
    }
    for side in ("brand", "partner"):
        service = compose["services"][f"{side}-api"]
        command = service["command"]
        assert command[:3] == ["python", "-m", "api"]
        for option in options(command):
            assert option in api_help
        port = command[command.index("--port") + 1]
        assert f"{port}:{port}" in service["ports"]
        assert f"127.0.0.1:{port}/health" in " ".join(service["healthcheck"]["test"])
        assert set(service["environment"]) <= setting_names


def test_flower_services_use_real_options_and_agree_on_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    superlink, supernode = services["brand-superlink"], services["partner-supernode"]
    link_help = help_text(str(BIN / "flower-superlink"), "--help")
    node_help = help_text(str(BIN / "flower-supernode"), "--help")
    assert superlink["command"][0] == "flower-superlink"
    assert supernode["command"][0] == "flower-supernode"
    for option in options(superlink["command"]):
        assert re.search(rf"{re.escape(option)}\b", link_help), option
    for option in options(supernode["command"]):
        assert re.search(rf"{re.escape(option)}\b", node_help), option
    link = dict(p.split("=", 1) for p in superlink["command"] if "=" in p)
    node = dict(p.split("=", 1) for p in supernode["command"] if "=" in p)
    assert f"{link['--port']}:{link['--port']}" in superlink["ports"]
    assert node["--superlink"] == f"brand-superlink:{link['--port']}"
    assert f"('127.0.0.1', {link['--port']})" in " ".join(superlink["healthcheck"]["test"])
    assert f"('127.0.0.1', {node['--port']})" in " ".join(supernode["healthcheck"]["test"])
    assert supernode["depends_on"]["brand-superlink"]["condition"] == "service_healthy"
    # TLS and SuperNode authentication, not --insecure, between the companies
    assert "--insecure" not in superlink["command"] + supernode["command"]
    assert "--enable-supernode-auth" in superlink["command"]


def test_the_supernode_relays_to_the_partner_and_holds_no_partner_data(
    compose: dict[str, Any],
) -> None:
    supernode = compose["services"]["partner-supernode"]
    config = next(p for p in supernode["command"] if p.startswith("--node-config="))
    match = re.fullmatch(r'--node-config=partner-url="http://([a-z-]+):(\d+)"', config)
    assert match and match.group(1) == "partner-api"
    serve_help = help_text(sys.executable, "-m", "pec", "vfl", "serve", "--help")
    assert "--host" in serve_help and "--port" in serve_help  # the relay target can listen there
    assert all(v.startswith("./deploy/certs:") for v in supernode.get("volumes", []))


def test_the_image_installs_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["mypy"]["packages"]
    for package in packages:
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.M), package
    assert "pip install" in dockerfile and "USER pec" in dockerfile
