"""PSI over a real Flower 1.41 deployment on loopback: SuperLink, SuperNode, relay, `flwr run`.

Brand: SuperLink + ServerApp (its installed PEC drives the rounds). Partner: SuperNode whose
ClientApp only relays bytes to the partner's own `pec psi serve` process, which holds the
partner's table and state. Every process is started here, bound by timeouts, and killed by its
process group.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("flwr")
pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[2] / "parties" / "flower_app"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not come up within {timeout} s")


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def launch(env: dict[str, str], run_config: str, attempts: int = 5) -> str:
    """`flwr run`, retried while the SuperLink is still starting; returns the run id."""
    output = ""
    for _ in range(attempts):
        launched = subprocess.run(
            [str(BIN / "flwr"), "run", str(APP), "pec-test", "--run-config", run_config,
             "--format", "json"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        output = launched.stdout + launched.stderr
        try:
            answer = json.loads(launched.stdout)
        except json.JSONDecodeError:
            answer = {}
        if launched.returncode == 0 and "run-id" in answer:
            return str(answer["run-id"])
        time.sleep(3)
    raise AssertionError(f"flwr run did not start a run: {output[-2000:]}")


def run_status(env: dict[str, str], run_id: str) -> str:
    listing = subprocess.run(
        [str(BIN / "flwr"), "ls", "pec-test", "--run-id", run_id, "--format", "json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if listing.returncode != 0:
        return ""
    data = json.loads(listing.stdout)
    runs = data.get("runs", [])
    return str(runs[0].get("status", "")) if runs else ""


def test_psi_both_sides_over_flower(tmp_path: Path) -> None:
    brand = pd.DataFrame({"id": range(8), "phone": [f"1380000{i:04d}" for i in range(8)]})
    partner = pd.DataFrame(
        {"mobile": [f"+86 1380000{i:04d}" for i in range(4, 14)], "tag": list("abcdefghij")}
    )
    brand.to_csv(tmp_path / "brand.csv", index=False)
    partner.to_csv(tmp_path / "partner.csv", index=False)
    sl_port, sn_port, relay_port = free_port(), free_port(), free_port()
    homes = {name: tmp_path / name for name in ("sl", "sn", "cli")}
    for home in homes.values():
        home.mkdir()
    (homes["cli"] / "config.toml").write_text(
        f'[superlink]\ndefault = "pec-test"\n\n[superlink.pec-test]\n'
        f'address = "127.0.0.1:{sl_port}"\ninsecure = true\n'
    )
    env = os.environ | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
    }
    job = "job-flower-1"
    processes: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], home: str | None, log: str) -> None:
        extra = {"FLWR_HOME": str(homes[home])} if home else {}
        with (tmp_path / log).open("wb") as out:
            processes.append(
                subprocess.Popen(
                    args,
                    env=env | extra,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=tmp_path,
                )
            )

    try:
        start(
            [sys.executable, "-m", "pec", "psi", "serve", "partner.csv", "--job-id", job,
             "--key", "phone=mobile:phone", "--reveal", "both", "--align", "--out", "partner_out",
             "--port", str(relay_port), "--timeout", "300"],
            None, "relay.log",
        )  # fmt: skip
        start(
            [str(BIN / "flower-superlink"), "--insecure",
             "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
             "--port", str(sl_port)],
            "sl", "superlink.log",
        )  # fmt: skip
        start(
            [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{sl_port}",
             "--host", "127.0.0.1", "--port", str(sn_port),
             "--node-config", f'partner-url="http://127.0.0.1:{relay_port}"'],
            "sn", "supernode.log",
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{relay_port}/health", 60)
        wait_port(sl_port, 60)
        cli_env = env | {"FLWR_HOME": str(homes["cli"])}
        run_config = (
            f'job-id="{job}" table="{tmp_path / "brand.csv"}" keys="phone=mobile:phone" '
            f'reveal="both" out="{tmp_path / "brand_out"}" timeout=240 align=true'
        )
        run_id = launch(cli_env, run_config)
        deadline, status = time.monotonic() + 240, ""
        while time.monotonic() < deadline:
            status = run_status(cli_env, run_id)
            if status.startswith("finished"):
                break
            time.sleep(2)
        logs = subprocess.run(
            [str(BIN / "flwr"), "log", run_id, "pec-test", "--show"],
            env=cli_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert status == "finished:completed", (status, logs.stdout[-3000:])
        left = pd.read_csv(tmp_path / "brand_out" / "left.csv", dtype=str)
        assert left["id"].tolist() == ["4", "5", "6", "7"]
        right = pd.read_csv(tmp_path / "partner_out" / "right.csv", dtype=str)
        assert right["tag"].tolist() == ["a", "b", "c", "d"]
        pairs = left.merge(right, on="pec_match_id")  # aligned by the shared pseudonymous id
        assert pairs["id"].tolist() == ["4", "5", "6", "7"]
        assert pairs["tag"].tolist() == ["a", "b", "c", "d"]
        brand_summary = json.loads((tmp_path / "brand_out" / "summary.json").read_text())
        assert brand_summary["intersection"] == 4
        processes[0].wait(timeout=30)  # the relay exits once its job is complete
        assert processes[0].returncode == 0
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
