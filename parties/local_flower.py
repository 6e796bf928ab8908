"""A Flower deployment on loopback for one machine: SuperLink, a partner, its SuperNode, a run.

``pec vfl local`` (and tests) use it to run the brand and the partner as separate OS processes
over the real deployment engine, exactly as two nodes would, only on 127.0.0.1: the brand's
SuperLink and ServerApp (started by ``flwr run``), the partner's own PEC process (the relay
target that holds its data) and the partner's SuperNode, whose ClientApp only relays bytes.
Every wait is bounded; every process is started in its own session and stopped by its process
group. Logs go to files in the work folder, never to the terminal.

Secure mode (:mod:`parties.flower_tls`): with ``tls`` the SuperLink serves TLS with its
certificate and the CLI verifies it with the CA; with ``supernode_auth`` it admits only
SuperNodes whose public key was registered (:meth:`LocalFlower.register_supernode`); a SuperNode
started with ``root_certificates`` verifies the SuperLink and, with ``supernode_key``, signs its
requests. Without them everything is plaintext gRPC on loopback (tests, ``pec vfl local``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from parties.errors import PartyError
from parties.flower_tls import SuperLinkTls, SuperNodeKey

__all__ = ["APP_DIR", "LocalFlower", "free_port", "run_config_text"]

APP_DIR = Path(__file__).resolve().parent / "flower_app"
CONNECTION = "pec-local"
PROCESS_FILE = "processes.json"


def _is_ours(pid: int, workdir: Path) -> bool:
    """Whether ``pid`` runs a Flower or PEC program with ``workdir`` as its working folder."""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cwd == workdir and (b"flower-" in cmdline or b"flwr" in cmdline or b"pec" in cmdline)


def reap_recorded(workdir: Path) -> list[str]:
    """Stop the Flower process groups recorded in ``workdir`` that still run; their names.

    Each recorded group is stopped only while its leader is still a Flower process started from
    ``workdir`` (a reused PID is left alone). The record is removed.
    """
    workdir = workdir.resolve()
    record = workdir / PROCESS_FILE
    try:
        groups = {str(k): int(v) for k, v in json.loads(record.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return []
    reaped = []
    for name, pid in groups.items():
        if _is_ours(pid, workdir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            reaped.append(name)
    record.unlink(missing_ok=True)
    return reaped


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_config_text(config: Mapping[str, Any]) -> str:
    """A ``--run-config`` string: TOML ``key=value`` pairs (strings quoted and escaped)."""
    parts = []
    for key, value in config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = json.dumps(str(value))
        parts.append(f"{key}={text}")
    return " ".join(parts)


class LocalFlower:
    """Start, drive and stop a loopback deployment (use as a context manager)."""

    def __init__(
        self,
        workdir: Path,
        *,
        poll_interval: float = 0.2,
        superlink_port: int | None = None,
        superlink_host: str = "127.0.0.1",
        tls: SuperLinkTls | None = None,
        supernode_auth: bool = False,
        root_certificates: Path | None = None,
        supernode_key: SuperNodeKey | None = None,
    ) -> None:
        if supernode_auth and tls is None:
            raise PartyError("SuperNode authentication needs TLS on the SuperLink")
        self.workdir = workdir.resolve()
        self.superlink_host = superlink_host
        self.tls = tls
        self.supernode_auth = supernode_auth
        self.root_certificates = root_certificates or (tls.ca_cert if tls else None)
        self.supernode_key = supernode_key
        self.bin = Path(sys.executable).parent
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # a node passes the port its node.toml names; tests and `pec vfl local` take a free one
        self.superlink_port = superlink_port or free_port()
        self.env = os.environ | {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(poll_interval),
        }
        for name in ("superlink", "supernode", "cli"):
            (self.workdir / "flwr" / name).mkdir(parents=True, exist_ok=True)
        # the CLI talks to the brand's own SuperLink on this machine
        security = (
            f"root-certificates = {json.dumps(str(self.root_certificates))}\n"
            if self.root_certificates
            else "insecure = true\n"
        )
        (self.workdir / "flwr" / "cli" / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self._local_host()}:{self.superlink_port}"\n{security}'
        )
        self.cli_env = self.env | {"FLWR_HOME": str(self.workdir / "flwr" / "cli")}

    def _local_host(self) -> str:
        return "127.0.0.1" if self.superlink_host in ("0.0.0.0", "::") else self.superlink_host

    def __enter__(self) -> LocalFlower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self, name: str) -> Path:
        """The log file of a started process."""
        return self.workdir / f"{name}.log"

    def start(self, name: str, args: Sequence[str], home: str | None = None) -> None:
        """Start a process in its own session, output to ``name.log``; its group is recorded."""
        env = self.env | ({"FLWR_HOME": str(self.workdir / "flwr" / home)} if home else {})
        with self.log(name).open("ab") as out:  # a restarted process appends to its log
            self.processes[name] = subprocess.Popen(
                list(args),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.workdir,
            )
        self._record()

    def _record(self) -> None:
        groups = {name: p.pid for name, p in self.processes.items()}
        (self.workdir / PROCESS_FILE).write_text(json.dumps(groups))

    def reap_stale(self) -> list[str]:
        """Stop the process groups a previous owner of this folder left running; their names.

        A node killed with SIGKILL cannot stop its SuperLink or SuperNode; the next start on the
        same home finds their groups in the folder's record (see :func:`reap_recorded`).
        """
        return reap_recorded(self.workdir)

    def start_superlink(self) -> None:
        """The brand's SuperLink: TLS (and SuperNode authentication) when configured."""
        if self.tls is None:
            security = ["--insecure"]
        else:
            security = ["--ssl-ca-certfile", str(self.tls.ca_cert),
                        "--ssl-certfile", str(self.tls.cert),
                        "--ssl-keyfile", str(self.tls.key)]  # fmt: skip
            if self.supernode_auth:
                security.append("--enable-supernode-auth")
        self.start(
            "superlink",
            [str(self.bin / "flower-superlink"), *security,
             "--disable-runtime-dependency-installation",
             "--host", self.superlink_host, "--port", str(self.superlink_port)],
            home="superlink",
        )  # fmt: skip

    def register_supernode(self, public_key: Path, timeout: float = 60) -> None:
        """Admit a SuperNode's public key on this SuperLink (``flwr supernode register``).

        Raises:
            PartyError: the SuperLink did not accept the key in time (its answer in a log file).
        """
        deadline = time.monotonic() + timeout
        done = None
        while time.monotonic() < deadline:
            done = self._flwr("supernode", "register", str(public_key), CONNECTION,
                              "--format", "json")  # fmt: skip
            if done.returncode == 0:
                return
            if "already" in (done.stdout + done.stderr).lower():
                return
            time.sleep(1)
        log = self.workdir / "flwr-register.log"
        log.write_text("" if done is None else done.stdout + done.stderr)
        raise PartyError(f"the SuperLink did not register the SuperNode (see {log})")

    def start_supernode(self, partner_url: str, superlink: str | None = None) -> None:
        """The partner's SuperNode; its ClientApp relays to ``partner_url``.

        ``superlink`` is the brand's SuperLink address (default: this machine's).
        """
        security: list[str] = []
        if self.root_certificates is None:
            security.append("--insecure")
        else:
            security += ["--root-certificates", str(self.root_certificates)]
        if self.supernode_key is not None:
            security += ["--auth-supernode-private-key", str(self.supernode_key.private_key)]
        self.start(
            "supernode",
            [str(self.bin / "flower-supernode"), *security,
             "--superlink", superlink or f"{self._local_host()}:{self.superlink_port}",
             "--host", "127.0.0.1", "--port", str(free_port()),
             "--node-config", f"partner-url={json.dumps(partner_url)}"],
            home="supernode",
        )  # fmt: skip

    def alive(self, name: str) -> bool:
        """True while the named process runs."""
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def wait_http(self, url: str, timeout: float, name: str) -> None:
        """Wait until ``url`` answers (the process ``name`` must stay alive)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive(name):
                raise PartyError(f"{name} stopped while starting (see {self.log(name)})")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise PartyError(f"{name} did not answer within {timeout:.0f} s")

    def wait_superlink(self, timeout: float = 60) -> None:
        """Wait until the SuperLink accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive("superlink"):
                raise PartyError(f"the SuperLink stopped (see {self.log('superlink')})")
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex((self._local_host(), self.superlink_port)) == 0:
                    return
            time.sleep(0.2)
        raise PartyError(f"the SuperLink did not start within {timeout:.0f} s")

    def _flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "flwr"), *args],
            env=self.cli_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )

    def launch(self, run_config: Mapping[str, Any], attempts: int = 6) -> str:
        """``flwr run`` the app with this config (retried while the SuperLink starts)."""
        text = run_config_text(run_config)
        for _ in range(attempts):
            done = self._flwr(
                "run", str(APP_DIR), CONNECTION, "--run-config", text, "--format", "json"
            )
            try:
                answer = json.loads(done.stdout)
            except json.JSONDecodeError:
                answer = {}
            if done.returncode == 0 and "run-id" in answer:
                return str(answer["run-id"])
            time.sleep(2)
        (self.workdir / "flwr-run.log").write_text(done.stdout + done.stderr)
        raise PartyError(f"flwr run did not start a run (see {self.workdir / 'flwr-run.log'})")

    def status(self, run_id: str) -> str:
        """The run's status as ``flwr ls`` reports it (``finished:completed`` etc.)."""
        try:
            listing = self._flwr("ls", CONNECTION, "--run-id", run_id, "--format", "json")
            runs = json.loads(listing.stdout).get("runs", []) if listing.returncode == 0 else []
        except (json.JSONDecodeError, subprocess.TimeoutExpired):
            return ""
        return str(runs[0].get("status", "")) if runs else ""

    def run_log(self, run_id: str) -> str:
        """The ServerApp's log of a run (for diagnostics)."""
        try:
            return self._flwr("log", run_id, CONNECTION, "--show", timeout=60).stdout
        except subprocess.TimeoutExpired:
            return ""

    def stop(self) -> None:
        """Stop every started process by its process group (TERM, then KILL)."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
