"""PSI benchmark: PEC's ECDH-PSI vs OpenMined PSI, side by side, on the same inputs.

Run by hand (not a test):  make bench-psi   or
    .venv/bin/python benchmarks/bench_psi.py --sizes 100000 1000000

For each size n, both tables have n distinct raw identifiers and share n/2 of them. Both parties
run on this machine, each in its own process:

* PEC: ``pec psi local LEFT RIGHT --key id:raw --reveal left`` end to end (CSV in, matched rows
  out; normalization, masking in a process pool per party, truncated comparison).
* OpenMined PSI 2.0.6 (``openmined-psi``): server and client in two processes exchanging the
  serialized protobufs over a pipe; the client learns the intersection (reveal_intersection=True,
  GCS setup with fpr 1e-9, its default data structure); inputs are handed over in memory, so its
  figures exclude file I/O that PEC's include.

With ``--repeat N`` each size runs N times and the spread of the speed-up is printed.

PEC's packages are byte-compiled before the runs, as an installed package is (pip compiles at
install); an editable checkout under PYTHONDONTWRITEBYTECODE would otherwise recompile them on
every run (about 40 ms of start-up on our VM).

Reports wall seconds and peak resident memory per party (ru_maxrss; for PEC the party process
and its largest worker), and the ratio. It also measures one X25519 multiplication through
``cryptography`` on this machine and prints the floor that puts under an ECDH-PSI (4 n
multiplications spread over every core) beside the 4x target. Results go to stdout as a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_tables(n: int, directory: Path, seed: int = 7) -> tuple[Path, Path, list[str], list[str]]:
    rng = np.random.default_rng(seed)
    ids = [f"{v:016x}" for v in rng.integers(0, 2**63, size=int(n * 1.5), dtype=np.int64)]
    half = n // 2
    left_ids = ids[:n]
    right_ids = ids[:half] + ids[n : n + (n - half)]
    rng.shuffle(right_ids)
    left, right = directory / f"left_{n}.csv", directory / f"right_{n}.csv"
    left.write_text("id\n" + "\n".join(left_ids) + "\n")
    right.write_text("id\n" + "\n".join(right_ids) + "\n")
    return left, right, left_ids, right_ids


def run_pec(left: Path, right: Path, out: Path) -> dict[str, object]:
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pec",
            "psi",
            "local",
            str(left),
            str(right),
            "--key",
            "id:raw",
            "--reveal",
            "left",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "seconds": seconds,
        "intersection": summary["intersection"],
        "peak": summary["peak_rss_mb"],
        # each party's read / normalize / protocol / write seconds; the rest of the wall time is
        # starting the CLI and the party processes
        "phases": summary["phase_seconds"],
    }


def _om_server(items: list[str], conn, result) -> None:  # type: ignore[no-untyped-def]
    import private_set_intersection.python as psi

    server = psi.server.CreateWithNewKey(True)
    n_client = conn.recv()
    setup = server.CreateSetupMessage(1e-9, n_client, items, psi.DataStructure.GCS)
    conn.send_bytes(setup.SerializeToString())
    request = psi.Request()
    request.ParseFromString(conn.recv_bytes())
    conn.send_bytes(server.ProcessRequest(request).SerializeToString())
    result.put(("server", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, None))


def _om_client(items: list[str], conn, result) -> None:  # type: ignore[no-untyped-def]
    import private_set_intersection.python as psi

    client = psi.client.CreateWithNewKey(True)
    conn.send(len(items))
    setup = psi.ServerSetup()
    setup.ParseFromString(conn.recv_bytes())
    conn.send_bytes(client.CreateRequest(items).SerializeToString())
    response = psi.Response()
    response.ParseFromString(conn.recv_bytes())
    found = client.GetIntersection(setup, response)
    result.put(("client", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(found)))


def run_openmined(left_ids: list[str], right_ids: list[str]) -> dict[str, object]:
    ctx = mp.get_context("fork")
    a, b = ctx.Pipe()
    result = ctx.Queue()
    started = time.perf_counter()
    procs = [
        ctx.Process(target=_om_server, args=(right_ids, a, result)),
        ctx.Process(target=_om_client, args=(left_ids, b, result)),
    ]
    for p in procs:
        p.start()
    outcome = {}
    for _ in procs:
        who, peak, found = result.get(timeout=3600)
        outcome[who] = (peak, found)
    for p in procs:
        p.join()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "intersection": outcome["client"][1],
        "peak": {
            "client": round(outcome["client"][0], 1),
            "server": round(outcome["server"][0], 1),
        },
    }


def exchange_microseconds(calls: int = 20_000) -> float:
    """What one X25519 multiplication costs here through ``cryptography`` (best of 3 rounds)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    key = X25519PrivateKey.generate()
    points = [X25519PrivateKey.generate().public_key().public_bytes_raw() for _ in range(calls)]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for point in points:
            key.exchange(X25519PublicKey.from_public_bytes(point))
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def floor_seconds(n: int, microseconds: float, cores: int) -> float:
    """The protocol's arithmetic alone: 4 multiplications per pair (each side masks both sets)."""
    return 4 * n * microseconds / 1e6 / max(1, cores)


#: PEC's top-level packages (pyproject.toml installs the same).
PACKAGES = ("pec", "psi", "federated", "consent", "parties", "api")


def compile_project() -> int:
    """Byte-compile the project's packages, as ``pip install`` does for an installed package.

    An editable checkout has no bytecode until Python writes it on first import, and with
    PYTHONDONTWRITEBYTECODE set (as on some machines) it never does: every run would then
    compile PEC's modules again, which an installed PEC (and openmined-psi's own modules, compiled
    by pip) does not pay. Returns how many packages compiled cleanly.
    """
    import compileall

    root = Path(__file__).resolve().parent.parent
    return sum(
        bool(compileall.compile_dir(root / name, quiet=2))
        for name in PACKAGES
        if (root / name).is_dir()
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--skip-openmined-above",
        type=int,
        default=10**9,
        help="skip openmined-psi for sizes above this (it is slow)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each size this many times (PEC then openmined-psi each time) and report the "
        "spread of the speed-up: on a shared machine one pair of runs is not a measurement",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    compiled = compile_project()
    per_call = exchange_microseconds()
    print(
        f"machine: {cores} cores; python {sys.version.split()[0]}; one X25519 exchange through "
        f"cryptography: {per_call:.1f} us; PEC's packages byte-compiled first: {compiled} of "
        f"{len(PACKAGES)}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            left, right, left_ids, right_ids = make_tables(n, Path(tmp))
            for _ in range(max(1, args.repeat)):
                pec = run_pec(left, right, Path(tmp) / f"out_{n}")
                print(f"n={n} pec: {pec}", flush=True)
                om = None
                if n <= args.skip_openmined_above:
                    om = run_openmined(left_ids, right_ids)
                    print(f"n={n} openmined-psi: {om}", flush=True)
                    assert om["intersection"] == pec["intersection"], "the two PSIs disagree"
                rows.append((n, pec, om))
    print(
        "\n| n x n | PEC s | openmined-psi s | speed-up "
        "| PEC peak MiB (party + largest worker), left / right "
        "| openmined peak MiB client / server "
        "| X25519 floor s (4 n multiplications over all cores) | 4x target s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, pec, om in rows:
        peak = pec["peak"]
        pec_mem = " / ".join(
            f"{peak[s]['party']} + {peak[s]['largest_worker']}" for s in ("left", "right")
        )
        if om:
            ratio = om["seconds"] / pec["seconds"]
            om_mem = f"{om['peak']['client']} / {om['peak']['server']}"
            om_cols = f"{om['seconds']:.2f} | {ratio:.2f}x | {pec_mem} | {om_mem}"
            target = f"{om['seconds'] / 4:.1f}"
        else:
            om_cols, target = f"skipped | - | {pec_mem} | -", "-"
        floor = floor_seconds(n, per_call, cores)
        print(f"| {n:,} | {pec['seconds']:.2f} | {om_cols} | {floor:.1f} | {target} |")
    print("\nPEC phases, seconds (read / normalize / protocol / write), left; right:")
    for n, pec, _ in rows:
        phases = pec["phases"]
        sides = "; ".join(
            " / ".join(f"{phases[s][p]:.2f}" for p in ("read", "normalize", "protocol", "write"))
            for s in ("left", "right")
        )
        print(f"- {n:,}: {sides}")
    for n in args.sizes:
        ratios = sorted(
            om["seconds"] / pec["seconds"] for size, pec, om in rows if size == n and om
        )
        if len(ratios) > 1:
            print(
                f"\nspeed-up at {n:,} over {len(ratios)} runs: min {ratios[0]:.2f}x, median "
                f"{statistics.median(ratios):.2f}x, max {ratios[-1]:.2f}x; "
                f"{sum(r >= 4 for r in ratios)} of {len(ratios)} at 4x or more"
            )


if __name__ == "__main__":
    main()
