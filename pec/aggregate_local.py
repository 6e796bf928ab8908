"""``pec psi aggregate``: group counts of a partner attribute over the brand's set, two processes.

The brand process reads its key column; the partner process reads its key and group columns and
holds the Paillier key; they exchange only protocol frames (``psi.aggregate``). What is written
is what the brand learns: ``aggregate.csv`` (one row per group: its count, or empty where the
partner suppressed it) and ``summary.json``. Outputs appear only when the run succeeds.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pec.errors import InputError, PecError
from pec.psi_local import KeyPair, ProgressSink, peak_rss_mb, publish, run_parties
from pec.tables import inspect_table, read_columns
from psi.aggregate import AGG_PROTOCOL, AggregateBrand, AggregateConfig, AggregatePartner
from psi.batch import BatchEngine, InlineEngine, PoolEngine
from psi.normalize import NormalizationRules
from psi.session import ConnectionChannel, run_party
from psi.wire import Role

__all__ = [
    "AggregateOptions", "group_columns", "make_party", "run_aggregate_local", "shares",
    "write_cells",
]  # fmt: skip

OUTPUT_NAMES = ("summary.json", "aggregate.csv")
MISSING_GROUP = "(missing)"
CROSS = "*"
"""Joins the partner columns of a crossed group: ``competitor_brand*competitor_tier``."""
LABEL_JOIN = " x "


def group_columns(group: str) -> list[str]:
    """The partner columns of a group: one column, or several crossed with ``*``.

    Raises:
        InputError: an empty or repeated column name.
    """
    columns = [c.strip() for c in group.split(CROSS)]
    if not all(columns) or len(set(columns)) != len(columns):
        raise InputError(f"group {group!r}: give column names, crossed with '*', each once")
    return columns


def shares(cells: dict[str, int | None], intersection: int | None) -> dict[str, float | None]:
    """Each released cell's share of the intersection (``None`` where the cell is withheld)."""
    if not intersection:
        return {label: None for label in cells}
    return {
        label: None if count is None else round(count / intersection, 4)
        for label, count in cells.items()
    }


@dataclass(frozen=True)
class AggregateOptions:
    """One key, the partner's group column (or ``a*b`` for a crossing), and the release rules."""

    key: KeyPair
    group: str
    min_cell: int = 20
    epsilon: float | None = None
    key_bits: int = 2048
    region: str = "CN"
    email_aliases: bool = False
    chunk_size: int = 16_384
    workers: int = 0
    timeout: float = 600.0


@dataclass(frozen=True)
class _Job:
    role: Role
    path: Path
    key_column: str
    group_column: str
    config: AggregateConfig
    rules: NormalizationRules
    options: AggregateOptions
    workdir: Path


def _engine(size: int, workers: int) -> BatchEngine:
    return PoolEngine(workers) if size >= 20_000 else InlineEngine()


def make_party(
    role: Role,
    path: Path,
    key_column: str,
    group_column: str,
    config: AggregateConfig,
    rules: NormalizationRules,
    options: AggregateOptions,
) -> tuple[AggregateBrand | AggregatePartner, BatchEngine, dict[str, Any]]:
    """Read one side's own columns and build its party (brand: LEFT, partner: RIGHT).

    Returns the party, its batch engine (the caller closes it) and a report of rows, invalid
    keys and (partner) groups.

    Raises:
        InputError: the table or a column is unreadable.
    """
    import pandas as pd

    from psi.normalize import normalize_column

    crossed = group_columns(group_column) if role is Role.RIGHT else []
    columns = [key_column, *crossed]
    table = read_columns(path, columns)
    normalized = normalize_column(table[key_column], options.key.kind, rules)
    valid = normalized.values.notna()
    keys = normalized.values[valid]
    report: dict[str, Any] = {
        "rows": len(table),
        "invalid": normalized.invalid_count,
        "invalid_examples": list(normalized.invalid_examples),
    }
    if role is Role.LEFT:
        values = [v.encode() for v in pd.unique(keys)]
        engine = _engine(len(values), options.workers)
        return AggregateBrand(config, values, engine=engine), engine, report
    parts = [table[c][valid].astype(str).replace("", MISSING_GROUP) for c in crossed]
    groups = parts[0]
    for part in parts[1:]:
        groups = groups + LABEL_JOIN + part
    first = ~keys.duplicated()
    keys, groups = keys[first], groups[first]
    labels = sorted(set(groups))
    index = {label: i for i, label in enumerate(labels)}
    engine = _engine(len(keys), options.workers)
    party = AggregatePartner(
        config,
        [k.encode() for k in keys],
        [index[g] for g in groups],
        labels,
        min_cell=options.min_cell,
        epsilon=options.epsilon,
        key_bits=options.key_bits,
        engine=engine,
        paillier_workers=options.workers or 2,
    )
    report["groups"] = len(labels)
    return party, engine, report


def _party_main(job: _Job, conn: Connection, events: Any) -> None:
    """A party process: read own columns, run the aggregate protocol, report."""
    engine: BatchEngine | None = None
    try:
        party, engine, report = make_party(job.role, job.path, job.key_column, job.group_column,
                                           job.config, job.rules, job.options)  # fmt: skip
        result = run_party(party, ConnectionChannel(conn), timeout=job.options.timeout)
        if job.role is Role.LEFT:
            report["cells"] = result.cells
            report["intersection"] = result.intersection
            write_cells(job.workdir / "aggregate.csv", result.cells)
        report["peak_rss_mb"] = peak_rss_mb(resource.RUSAGE_SELF)
        events.put(("result", job.role.value, report))
    except PecError as exc:
        kind = "input" if isinstance(exc, InputError) else "protocol"
        events.put(("error", job.role.value, kind, f"{type(exc).__name__}: {exc}"))
    except Exception as exc:  # report, never hang the parent
        events.put(("error", job.role.value, "internal", f"{type(exc).__name__}: {exc}"))
    finally:
        if engine is not None:
            engine.close()
        conn.close()


def write_cells(path: Path, cells: dict[str, int | None]) -> None:
    """``aggregate.csv``: one row per group, its count or empty where suppressed."""
    lines = ["group,count,suppressed"]
    for label, count in cells.items():
        quoted = '"' + label.replace('"', '""') + '"' if "," in label or '"' in label else label
        lines.append(f"{quoted},{'' if count is None else count},{int(count is None)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_aggregate_local(
    brand: Path,
    partner: Path,
    out: Path,
    options: AggregateOptions,
    *,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """Run the intersection-aggregate between two local tables; returns the summary.

    Raises:
        InputError: a file or column is missing or unreadable (nothing is written).
        PsiError: the protocol failed or a party died (nothing is written).
    """
    started = time.perf_counter()
    if options.min_cell < 1 or (options.epsilon is not None and options.epsilon <= 0):
        raise InputError("--min-cell must be >= 1 and --epsilon > 0")
    try:
        rules = NormalizationRules(options.region, options.email_aliases)
    except ValueError as exc:
        raise InputError(f"--region: {exc}") from None
    inspect_table(brand, role="brand").require([options.key.left], role="brand")
    inspect_table(partner, role="partner").require(
        [options.key.right, *group_columns(options.group)], role="partner"
    )
    config = AggregateConfig(
        run_id=uuid.uuid4().hex,
        rules=rules.version((options.key.kind,)),
        kind=options.key.kind.value,
        chunk_size=options.chunk_size,
    )
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = out.parent / f".{out.name}.partial-{config.run_id[:12]}"
    workdir.mkdir()
    jobs = {
        Role.LEFT: _Job(Role.LEFT, brand, options.key.left, "", config, rules, options, workdir),
        Role.RIGHT: _Job(
            Role.RIGHT, partner, options.key.right, options.group, config, rules, options, workdir
        ),
    }
    try:
        reports = run_parties(_party_main, jobs, "pec-aggregate", options.timeout, progress)
        b, p = reports["left"], reports["right"]
        summary = {
            "protocol": AGG_PROTOCOL,
            "run_id": config.run_id,
            "brand": str(brand),
            "partner": str(partner),
            "key": {"brand": options.key.left, "partner": options.key.right,
                    "kind": options.key.kind.value},
            "group": options.group,
            "rules": config.rules,
            "brand_rows": b["rows"],
            "partner_rows": p["rows"],
            "brand_invalid": b["invalid"],
            "partner_invalid": p["invalid"],
            "brand_invalid_examples": b["invalid_examples"],
            "partner_invalid_examples": p["invalid_examples"],
            "intersection": b["intersection"],
            "cells": b["cells"],
            "shares": shares(b["cells"], b["intersection"]),
            "suppressed": sum(1 for v in b["cells"].values() if v is None),
            "min_cell": options.min_cell,
            "epsilon": options.epsilon,
            "key_bits": options.key_bits,
            "outputs": list(OUTPUT_NAMES[1:]),
            "peak_rss_mb": {"brand": b["peak_rss_mb"], "partner": p["peak_rss_mb"]},
            "seconds": round(time.perf_counter() - started, 3),
        }  # fmt: skip
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        publish(workdir, out, OUTPUT_NAMES)
        return summary
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
