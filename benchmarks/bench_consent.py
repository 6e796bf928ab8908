"""Benchmarks of the consent ledger against the targets of issue 3 (run by hand, not in CI).

    .venv/bin/python benchmarks/bench_consent.py --events 1000000 --backend sqlite
    .venv/bin/python benchmarks/bench_consent.py --events 1000000 --backend postgresql
    .venv/bin/python benchmarks/bench_consent.py --fault-only --fault-events 300000

Each phase (import, cohort, verify serial and with one worker per CPU, proofs) runs in its own
child process so its peak resident memory (ru_maxrss from wait4: the largest of the phase process
and the worker processes it waited for) is measured alone. Targets: import >= 10,000 events/s;
cohort of 1,000,000 subjects <= 3 s; verification of 1,000,000 events <= 20 s; inclusion proof
<= 10 ms; memory bounded. The fault test kills an import with SIGKILL, verifies the ledger,
re-runs the import and checks that every event is recorded exactly once.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("PEC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
FIELDS = [
    "event_id",
    "subject_id",
    "action",
    "purpose",
    "recipient",
    "data_categories",
    "legal_basis",
    "notice_id",
    "notice_version",
    "method",
    "occurred_at",
    "valid_until",
    "jurisdiction",
]


def write_events(path: Path, n: int, prefix: str = "e") -> None:
    """One event per subject: 80% grants to ins-co, 8% refusals, 5% withdrawals (of an earlier
    grant, so 2 events), 4% other recipient, 3% expired grants."""
    rng = random.Random(7)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(FIELDS)
        written = 0
        i = 0
        while written < n:
            r = rng.random()
            subject = f"+86138{i:08d}"
            base = [
                subject,
                "",
                "marketing.lead_scoring",
                "ins-co",
                "identifier.phone;income_level",
                "consent",
                "notice-2026",
                "3",
                "app",
                "2026-01-10T09:00:00+08:00",
                "",
                "CN",
            ]
            if r < 0.80:
                base[1] = "grant"
            elif r < 0.88:
                base[1] = "refuse"
            elif r < 0.93 and written + 2 <= n:
                base[1] = "grant"
                w.writerow([f"{prefix}{written}", *base])
                written += 1
                base[1] = "withdraw"
                base[9] = "2026-02-10T09:00:00+08:00"
            elif r < 0.97:
                base[1] = "grant"
                base[3] = "media-co"
            else:
                base[1] = "grant"
                base[10] = "2026-02-01T00:00:00Z"
            w.writerow([f"{prefix}{written}", *base])
            written += 1
            i += 1


def _ledger(home: Path, url: str) -> Any:
    from consent.ledger import ConsentLedger

    return ConsentLedger.open(home, url)


def phase(name: str, home: Path, url: str, arg: str) -> dict[str, Any]:
    """Run one phase in this process and return its measurements."""
    ledger = _ledger(home, url)
    out: dict[str, Any] = {"phase": name}
    t0 = time.perf_counter()
    if name == "import":
        r = ledger.import_file(Path(arg))
        dt = time.perf_counter() - t0
        out.update(
            appended=r.appended,
            skipped=r.skipped,
            seconds=dt,
            events_per_s=(r.appended + r.skipped) / dt,
        )
    elif name == "cohort":
        from datetime import UTC, datetime

        count = 0

        def sink(_: str) -> None:
            nonlocal count
            count += 1

        snap = ledger.cohort(
            "marketing.lead_scoring",
            "ins-co",
            ["identifier.phone"],
            datetime(2026, 3, 1, tzinfo=UTC),
            sink,
        )
        dt = time.perf_counter() - t0
        out.update(
            seconds=dt,
            eligible=snap.eligible,
            excluded=snap.excluded,
            subjects_considered=snap.eligible + sum(snap.excluded.values()),
        )
    elif name == "verify":
        workers = int(arg or 1)
        rep = ledger.verify(workers=workers)
        dt = time.perf_counter() - t0
        out.update(seconds=dt, ok=rep.ok, entries=rep.entries_checked, workers=workers)
    elif name == "proofs":
        from consent.merkle import verify_inclusion

        head = ledger.tree_head()
        rng = random.Random(1)
        lat = []
        for _ in range(int(arg)):
            i = rng.randrange(head.tree_size)
            s = time.perf_counter()
            p = ledger.inclusion_proof(i)
            lat.append((time.perf_counter() - s) * 1000)
            assert verify_inclusion(
                bytes.fromhex(p["leaf_hash"]),
                i,
                head.tree_size,
                [bytes.fromhex(h) for h in p["audit_path"]],
                head.root_hash,
            )
        lat.sort()
        out.update(
            n=len(lat),
            median_ms=statistics.median(lat),
            p99_ms=lat[int(len(lat) * 0.99) - 1],
            max_ms=lat[-1],
        )
    ledger.close()
    return out


def run_child(args: list[str], timeout: float = 3600) -> tuple[dict[str, Any], float]:
    """Run a phase in a child; return its JSON result and peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGKILL)
            raise TimeoutError(args)
        time.sleep(0.05)
    assert proc.stdout is not None
    data = proc.stdout.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"phase {args} failed")
    return json.loads(data.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def make_db(backend: str, work: Path) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite:///{work / 'bench.sqlite3'}", lambda: None
    import psycopg

    name = f"pec_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}", drop


def bench_backend(backend: str, n: int, work: Path, proofs: int) -> list[dict[str, Any]]:
    home = work / f"home-{backend}"
    src = work / f"events-{n}.csv"
    if not src.exists():
        t = time.perf_counter()
        write_events(src, n)
        print(f"# generated {n} events in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    url, drop = make_db(backend, work)
    results = []
    try:
        for name, arg in (
            ("import", str(src)),
            ("import", str(src)),
            ("cohort", ""),
            ("verify", "1"),
            ("verify", str(min(os.cpu_count() or 1, 4))),
            ("proofs", str(proofs)),
        ):
            res, rss = run_child(["--phase", name, "--home", str(home), "--url", url, "--arg", arg])
            res.update(backend=backend, peak_rss_mib=round(rss, 1))
            if name == "import" and res["appended"] == 0:
                res["phase"] = "re-import (all duplicates)"
            print(json.dumps(res), flush=True)
            results.append(res)
    finally:
        drop()
    return results


def fault_test(work: Path, n: int) -> dict[str, Any]:
    """kill -9 an import half-way; verify; re-import; check exactly-once."""
    home = work / "home-fault"
    url = f"sqlite:///{work / 'fault.sqlite3'}"
    src = work / f"fault-{n}.csv"
    write_events(src, n, prefix="f")
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        "import",
        "--home",
        str(home),
        "--url",
        url,
        "--arg",
        str(src),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    time.sleep(max(3.0, n / 20_000))
    alive = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    after_kill, _ = run_child(["--phase", "verify", "--home", str(home), "--url", url, "--arg", ""])
    redo, _ = run_child(["--phase", "import", "--home", str(home), "--url", url, "--arg", str(src)])
    again, _ = run_child(
        ["--phase", "import", "--home", str(home), "--url", url, "--arg", str(src)]
    )
    final, _ = run_child(["--phase", "verify", "--home", str(home), "--url", url, "--arg", ""])
    res = {
        "phase": "fault (kill -9 during import)",
        "events": n,
        "killed_while_running": alive,
        "verify_after_kill": {"ok": after_kill["ok"], "entries": after_kill["entries"]},
        "reimport_appended": redo["appended"],
        "second_reimport_appended": again["appended"],
        "final_verify": {"ok": final["ok"], "entries": final["entries"]},
        "exactly_once": final["ok"] and final["entries"] == n and again["appended"] == 0,
    }
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--proofs", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--fault-events", type=int, default=300_000)
    ap.add_argument("--fault-only", action="store_true")
    ap.add_argument("--no-fault", action="store_true")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--arg", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase:
        print(json.dumps(phase(a.phase, a.home, a.url, a.arg)))
        return
    work = a.workdir or Path(tempfile.mkdtemp(prefix="pec-bench-consent-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"# machine: {platform.platform()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}; workdir {work}",
        file=sys.stderr,
    )
    if not a.fault_only:
        backends = ["sqlite", "postgresql"] if a.backend == "both" else [a.backend]
        for b in backends:
            bench_backend(b, a.events, work, a.proofs)
    if a.fault_only or not a.no_fault:
        fault_test(work, a.fault_events)


if __name__ == "__main__":
    main()
