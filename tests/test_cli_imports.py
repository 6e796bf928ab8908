"""The ``pec`` command imports a sub-command group's modules only when that group runs."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

HEAVY = ("pandas", "sqlalchemy", "pydantic", "httpx", "flwr", "torch", "phe", "consent.ledger")


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_top_level_cli_imports_no_heavy_module() -> None:
    loaded = loaded_after("import pec.cli")
    assert not loaded & set(HEAVY)
    assert not {"pec.psi_local", "pec.node_cli", "consent.cli", "pec.job_cli"} & loaded


def test_a_group_is_loaded_when_its_command_runs() -> None:
    loaded = loaded_after(
        "from typer.testing import CliRunner\nfrom pec.cli import app\n"
        "assert CliRunner().invoke(app, ['consent', '--help']).exit_code == 0"
    )
    assert "consent.cli" in loaded
    assert "pec.node_cli" not in loaded


def test_the_top_level_help_lists_the_groups_without_importing_them() -> None:
    loaded = loaded_after(
        "from typer.testing import CliRunner\nfrom pec.cli import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0"
    )
    from pec.cli import GROUPS

    groups = {module for module, _ in GROUPS.values()} - {"pec.psi_cli"}  # pec.cli imports it
    assert groups and not groups & loaded
    assert not loaded & set(HEAVY)


def flat(text: str) -> str:
    """Help text without rich's box lines and line wrapping."""
    return " ".join(text.replace("│", " ").split())


def test_every_group_is_listed_with_its_summary_and_loads() -> None:
    from typer.testing import CliRunner

    from pec.cli import GROUPS, app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in [*GROUPS, "data", "demo", "version"]:
        assert f" {name} " in result.stdout
    for name, (_, summary) in GROUPS.items():
        assert flat(summary) in flat(result.stdout), name
        shown = CliRunner().invoke(app, [name, "--help"])
        assert shown.exit_code == 0, name
        assert flat(summary) in flat(shown.stdout), name  # the group's own help is the summary
