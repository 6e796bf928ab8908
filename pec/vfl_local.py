"""``pec vfl local``: a VFL job between two local parties over a real Flower deployment.

The brand (SuperLink + ServerApp) and the partner (its own ``pec vfl serve`` process + a
SuperNode whose ClientApp relays) run as separate OS processes on loopback; they align their rows
with PSI and train (see :mod:`federated.job`). Inputs are checked before anything starts; outputs
land in ``DIR`` only when the whole job succeeded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federated.artifacts import BRAND_OUTPUTS, PARTNER_OUTPUTS
from parties.local_flower import LocalFlower, free_port
from pec.errors import InputError, PecError
from pec.vfl_tables import load_party_table

__all__ = ["VflLocalOptions", "check_inputs", "run_vfl_local"]

ProgressFn = Callable[[str, str, int, int], None]


@dataclass(frozen=True)
class VflLocalOptions:
    """Everything ``pec vfl local`` takes besides the tables."""

    id_column: str
    labels: tuple[str, ...]
    partner_id_column: str | None = None
    """The partner's id column when it is named differently (default: ``id_column``)."""
    id_kind: str = "raw"
    brand_features: tuple[str, ...] | None = None
    partner_features: tuple[str, ...] | None = None
    key_bits: int = 2048
    seed: int = 0
    epochs: int = 8
    batch_size: int = 0
    optimizer: str = "nesterov"
    learning_rate: float = 1.0
    momentum: float = 0.7
    l2: float = 1e-4
    patience: int = 3
    stop_on: str = "auc"
    timeout: float = 3600.0
    workers: int = 0
    transport: str = "stream"
    positive_weight: float = 1.0


def check_inputs(
    brand: Path,
    partner: Path,
    options: VflLocalOptions,
    test_brand: Path | None = None,
    test_partner: Path | None = None,
) -> None:
    """Read and validate every table as the parties will (labels, numeric features, ids).

    Raises:
        InputError: what is wrong and where (file, row, column).
    """
    if (test_brand is None) != (test_partner is None):
        raise InputError("--test-brand and --test-partner go together: give both or neither")
    if not options.labels:
        raise InputError("at least one --label is needed")
    b = load_party_table(
        brand, options.id_column, role="brand", labels=options.labels,
        features=options.brand_features, id_kind=options.id_kind,
    )  # fmt: skip
    for name, y in b.labels.items():
        if len(set(y.tolist())) < 2:
            raise InputError(f"brand file {brand}, column {name!r}: the label has only one class")
    partner_id = options.partner_id_column or options.id_column
    p = load_party_table(
        partner, partner_id, role="partner", features=options.partner_features,
        id_kind=options.id_kind,
    )  # fmt: skip
    if test_brand is not None and test_partner is not None:
        load_party_table(
            test_brand, options.id_column, role="brand test", labels=options.labels,
            features=list(b.feature_names), require_labels=False, id_kind=options.id_kind,
        )  # fmt: skip
        load_party_table(
            test_partner, partner_id, role="partner test", features=list(p.feature_names),
            id_kind=options.id_kind,
        )  # fmt: skip


def _run_config(
    job_id: str, brand: Path, staging: Path, options: VflLocalOptions, test_brand: Path | None
) -> dict[str, Any]:
    return {
        "kind": "vfl",
        "job-id": job_id,
        "table": str(brand.resolve()),
        "id-column": options.id_column,
        "id-kind": options.id_kind,
        "labels": ";".join(options.labels),
        "features": ";".join(options.brand_features or ()),
        "test-table": str(test_brand.resolve()) if test_brand else "",
        "out": str(staging / "brand"),
        "key-bits": options.key_bits,
        "seed": options.seed,
        "epochs": options.epochs,
        "batch-size": options.batch_size,
        "optimizer": options.optimizer,
        "learning-rate": float(options.learning_rate),
        "l2": float(options.l2),
        "momentum": float(options.momentum),
        "patience": options.patience,
        "stop-on": options.stop_on,
        "workers": options.workers,
        "timeout": float(options.timeout),
        "progress-file": str(staging / "progress.jsonl"),
        "transport": options.transport,
        "positive-weight": float(options.positive_weight),
    }


def _partner_args(
    job_id: str, partner: Path, staging: Path, port: int, options: VflLocalOptions,
    test_partner: Path | None,
) -> list[str]:  # fmt: skip
    args = [
        sys.executable, "-m", "pec", "vfl", "serve", str(partner.resolve()),
        "--job-id", job_id, "--id", options.partner_id_column or options.id_column,
        "--id-kind", options.id_kind, "--out", str(staging / "partner"),
        "--port", str(port), "--min-key-bits", str(options.key_bits),
        "--optimizer", options.optimizer, "--learning-rate", str(options.learning_rate),
        "--l2", str(options.l2), "--momentum", str(options.momentum),
        "--timeout", str(options.timeout), "--workers", str(options.workers),
    ]  # fmt: skip
    for name in options.partner_features or ():
        args += ["--feature", name]
    if test_partner is not None:
        args += ["--test", str(test_partner.resolve())]
    return args


def _publish(staging: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "partner").mkdir(exist_ok=True)
    for name in PARTNER_OUTPUTS:
        if (staging / "partner" / name).exists():
            os.replace(staging / "partner" / name, out / "partner" / name)
    for name in (*BRAND_OUTPUTS[1:], BRAND_OUTPUTS[0]):  # metrics.json last: marks completion
        source = staging / "brand" / name
        if source.exists():
            os.replace(source, out / name)
        elif (out / name).exists():
            (out / name).unlink()  # stale output of an earlier run


class _Follower:
    """Reads new lines of the brand's progress file."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def run_vfl_local(
    brand: Path,
    partner: Path,
    out: Path,
    options: VflLocalOptions,
    *,
    test_brand: Path | None = None,
    test_partner: Path | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run the job; returns the brand's metrics (also in ``out/metrics.json``).

    Raises:
        InputError: bad input, found before anything starts or by a party (no overlap).
        PecError: the job failed; nothing was written to ``out``.
    """
    check_inputs(brand, partner, options, test_brand, test_partner)
    note = progress or (lambda role, stage, done, total: None)
    job_id = f"vfl-{secrets.token_hex(6)}"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = (out.parent / f".{out.name}.{job_id}").resolve()
    (staging / "run").mkdir(parents=True)
    started = time.monotonic()
    try:
        with LocalFlower(staging / "run") as flower:
            port = free_port()
            note("setup", "deployment", 0, 3)
            flower.start(
                "partner", _partner_args(job_id, partner, staging, port, options, test_partner)
            )
            flower.start_superlink()
            flower.wait_http(f"http://127.0.0.1:{port}/health", 120, "partner")
            flower.start_supernode(f"http://127.0.0.1:{port}")
            flower.wait_superlink()
            note("setup", "deployment", 1, 3)
            run_id = flower.launch(_run_config(job_id, brand, staging, options, test_brand))
            note("setup", "deployment", 2, 3)
            _follow(flower, run_id, staging, options.timeout - (time.monotonic() - started), note)
            note("setup", "deployment", 3, 3)
            partner_process = flower.processes["partner"]
            partner_process.wait(timeout=60)
            if partner_process.returncode != 0:
                raise PecError(
                    f"the partner did not complete the job (see {flower.log('partner')})"
                )
        metrics: dict[str, Any] = json.loads((staging / "brand" / "metrics.json").read_text())
        _publish(staging, out)
    except BaseException:
        # nothing of a failed job's outputs survives; its logs stay beside DIR for diagnosis
        for part in ("brand", "partner", "progress.jsonl"):
            path = staging / part
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    metrics["seconds_end_to_end"] = round(time.monotonic() - started, 3)
    return metrics


def _follow(
    flower: LocalFlower,
    run_id: str,
    staging: Path,
    timeout: float,
    note: ProgressFn,
    done_file: str = "metrics.json",
) -> None:
    """Show the brand's progress until its ``done_file`` appears.

    Raises:
        InputError: the brand reported bad input.
        PecError: the brand or the partner failed, the run ended, or the time ran out.
    """
    follower = _Follower(staging / "progress.jsonl")
    deadline = time.monotonic() + timeout
    last_status = time.monotonic()
    while time.monotonic() < deadline:
        for line in follower.lines():
            if line.get("stage") == "error":
                message = str(line.get("message", "the brand's side failed"))
                if line.get("kind") == "input":
                    raise InputError(message)
                raise PecError(f"the job failed at the brand: {line.get('error')}: {message}")
            note("brand", str(line["stage"]), int(line["done"]), int(line["total"]))
        if (staging / "brand" / done_file).exists():
            return
        if not flower.alive("partner") and not (staging / "partner").exists():
            raise PecError(f"the partner stopped during the job (see {flower.log('partner')})")
        if time.monotonic() - last_status > 15:  # `flwr ls` costs seconds of CPU: seldom
            last_status = time.monotonic()
            status = flower.status(run_id)
            if status.startswith("finished") and status != "finished:completed":
                (flower.workdir / "serverapp.log").write_text(flower.run_log(run_id))
                raise PecError(f"the Flower run ended as {status} (see the ServerApp log)")
        time.sleep(0.3)
    raise PecError(f"the job did not finish within {timeout:.0f} s")
