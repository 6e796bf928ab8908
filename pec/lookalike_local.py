"""``pec lookalike local``: a lookalike job between two local parties over a real Flower deployment.

The brand (SuperLink + ServerApp, with its seed) and the partner (its own ``pec lookalike serve``
process with its whole population, plus a SuperNode whose ClientApp relays) run as separate OS
processes on loopback, as in ``pec vfl local``. Inputs are checked before anything starts;
outputs land in ``DIR`` (the brand's) and ``DIR/partner`` (the partner's audience) only when the
whole job succeeded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federated.lookalike import AudienceChoice
from federated.lookalike_artifacts import BRAND_LOOKALIKE_OUTPUTS, PARTNER_LOOKALIKE_OUTPUTS
from parties.local_flower import LocalFlower, free_port
from pec.errors import InputError, PecError
from pec.lookalike_tables import load_seed_table
from pec.tables import inspect_table
from pec.vfl_local import ProgressFn, _follow

__all__ = ["LookalikeLocalOptions", "check_inputs", "run_lookalike_local"]


@dataclass(frozen=True)
class LookalikeLocalOptions:
    """Everything ``pec lookalike local`` takes besides the tables."""

    id_column: str
    label: str
    audience: AudienceChoice
    partner_id_column: str | None = None
    """The partner's id column when it is named differently (default: ``id_column``)."""
    id_kind: str = "raw"
    partner_features: tuple[str, ...] | None = None
    bands: int = 20
    min_cell: int = 20
    key_bits: int = 2048
    seed: int = 0
    epochs: int = 8
    learning_rate: float = 1.0
    momentum: float = 0.7
    l2: float = 1e-4
    patience: int = 3
    timeout: float = 3600.0
    workers: int = 0
    transport: str = "stream"


def check_inputs(seed: Path, population: Path, options: LookalikeLocalOptions) -> None:
    """Read and validate the seed as the brand will, and the population's header.

    The population is read in full only by the partner's process (it may hold millions of
    rows); what can go wrong in its body (a non-numeric feature, a duplicate id) is reported by
    that process, also with exit code 2.

    Raises:
        InputError: what is wrong and where (file, row, column).
    """
    load_seed_table(seed, options.id_column, options.label, id_kind=options.id_kind)
    info = inspect_table(population, role="partner")
    if not info.has_rows:
        raise InputError(f"partner file {population}: the table has no rows")
    partner_id = options.partner_id_column or options.id_column
    info.require([partner_id, *(options.partner_features or ())], role="partner")
    if options.partner_features is None and len(info.columns) < 2:
        raise InputError(f"partner file {population}: no feature columns besides {partner_id!r}")


def _run_config(
    job_id: str, seed: Path, staging: Path, options: LookalikeLocalOptions
) -> dict[str, Any]:
    return {
        "kind": "lookalike",
        "job-id": job_id,
        "table": str(seed.resolve()),
        "id-column": options.id_column,
        "id-kind": options.id_kind,
        "labels": options.label,
        "out": str(staging / "brand"),
        "key-bits": options.key_bits,
        "seed": options.seed,
        "epochs": options.epochs,
        "batch-size": 0,
        "optimizer": "nesterov",
        "learning-rate": float(options.learning_rate),
        "l2": float(options.l2),
        "momentum": float(options.momentum),
        "patience": options.patience,
        "stop-on": "auc",
        "workers": options.workers,
        "timeout": float(options.timeout),
        "progress-file": str(staging / "progress.jsonl"),
        "transport": options.transport,
        "audience-size": options.audience.size or 0,
        "threshold": float(options.audience.threshold or 0.0),
        "bands": options.bands,
        "min-cell": options.min_cell,
    }


def _partner_args(
    job_id: str, population: Path, staging: Path, port: int, options: LookalikeLocalOptions
) -> list[str]:
    args = [
        sys.executable, "-m", "pec", "lookalike", "serve", str(population.resolve()),
        "--job-id", job_id, "--id", options.partner_id_column or options.id_column,
        "--id-kind", options.id_kind, "--out", str(staging / "partner"),
        "--port", str(port), "--min-key-bits", str(options.key_bits),
        "--learning-rate", str(options.learning_rate), "--l2", str(options.l2),
        "--momentum", str(options.momentum), "--min-cell", str(options.min_cell),
        "--timeout", str(options.timeout), "--workers", str(options.workers),
    ]  # fmt: skip
    for name in options.partner_features or ():
        args += ["--feature", name]
    return args


def _publish(staging: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "partner").mkdir(exist_ok=True)
    for name in PARTNER_LOOKALIKE_OUTPUTS:
        if (staging / "partner" / name).exists():
            os.replace(staging / "partner" / name, out / "partner" / name)
    for name in (*BRAND_LOOKALIKE_OUTPUTS[1:], BRAND_LOOKALIKE_OUTPUTS[0]):  # the summary last
        source = staging / "brand" / name
        if source.exists():
            os.replace(source, out / name)
        elif (out / name).exists():
            (out / name).unlink()  # stale output of an earlier run


def _partner_failure(log: Path) -> PecError:
    """The partner's own one-line error (its exit code 2 means bad input), else a pointer."""
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("error:")]
    if lines:
        return InputError(lines[-1].removeprefix("error:").strip())
    return PecError(f"the partner did not complete the job (see {log})")


def run_lookalike_local(
    seed: Path,
    population: Path,
    out: Path,
    options: LookalikeLocalOptions,
    *,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run the job; returns the brand's summary (also in ``out/lookalike.json``).

    Raises:
        InputError: bad input, found before anything starts or by a party.
        PecError: the job failed; nothing was written to ``out``.
    """
    check_inputs(seed, population, options)
    note = progress or (lambda role, stage, done, total: None)
    job_id = f"lal-{secrets.token_hex(6)}"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = (out.parent / f".{out.name}.{job_id}").resolve()
    (staging / "run").mkdir(parents=True)
    started = time.monotonic()
    try:
        with LocalFlower(staging / "run") as flower:
            port = free_port()
            note("setup", "deployment", 0, 3)
            flower.start("partner", _partner_args(job_id, population, staging, port, options))
            flower.start_superlink()
            try:
                # the partner reads its whole population before it answers
                flower.wait_http(f"http://127.0.0.1:{port}/health", options.timeout, "partner")
            except PecError:
                raise _partner_failure(flower.log("partner")) from None
            flower.start_supernode(f"http://127.0.0.1:{port}")
            flower.wait_superlink()
            note("setup", "deployment", 1, 3)
            run_id = flower.launch(_run_config(job_id, seed, staging, options))
            note("setup", "deployment", 2, 3)
            remaining = options.timeout - (time.monotonic() - started)
            _follow(flower, run_id, staging, remaining, note, done_file="lookalike.json")
            note("setup", "deployment", 3, 3)
            partner_process = flower.processes["partner"]
            partner_process.wait(timeout=300)
            if partner_process.returncode != 0:
                raise _partner_failure(flower.log("partner"))
        summary: dict[str, Any] = json.loads((staging / "brand" / "lookalike.json").read_text())
        partner = json.loads((staging / "partner" / "partner_summary.json").read_text())
        _publish(staging, out)
    except BaseException:
        # nothing of a failed job's outputs survives; its logs stay beside DIR for diagnosis
        for part in ("brand", "partner", "progress.jsonl"):
            path = staging / part
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    summary["seconds_end_to_end"] = round(time.monotonic() - started, 3)
    summary["partner"] = {
        "population": partner["population"],
        "audience_file": str(out / "partner" / "audience.csv"),
        "scoring_seconds": partner["scoring_seconds"],
        "writing_seconds": partner["writing_seconds"],
        "peak_rss_mib": partner["peak_rss_mib"],
    }
    return summary
