"""``pec psi local``: a PSI between two tables, each side in its own OS process.

The parent process validates the inputs, starts a left and a right party process connected by a
pipe, relays their progress, and publishes the outputs only when both succeeded. The two party
processes exchange nothing but protocol frames (:mod:`psi.wire`); each reads only its own table
and writes only what its side learns. Outputs are written to a temporary directory first and
moved into place at the end, so a failed run leaves nothing that looks like a result.

Never logs identifiers: reports carry counts and row numbers only.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pec.errors import InputError, PecError
from pec.tables import (
    TableInfo,
    inspect_table,
    iter_table,
    read_columns,
    read_plain_csv,
    table_format,
    write_plain_rows,
)
from psi.batch import BatchEngine, InlineEngine, PoolEngine, start_method
from psi.errors import InvalidKeyKind, PsiAborted, PsiError
from psi.normalize import KeyKind, NormalizationRules, infer_kind
from psi.protocol import PartyInput, PsiConfig, PsiParty, PsiResult, Reveal
from psi.session import ConnectionChannel, run_party
from psi.wire import PROTOCOL, Role

if TYPE_CHECKING:
    import pandas as pd

    from psi.prepare import KeyReport

__all__ = ["KeyPair", "PsiLocalOptions", "check_inputs", "parse_key_spec", "run_psi_local"]

OUTPUT_NAMES = ("summary.json", "left.csv", "right.csv")
#: Below this many distinct values per party, masking runs in the party process itself.
POOL_THRESHOLD = 20_000
#: The column ``--align`` adds to both outputs: equal on both sides for a matched pair.
MATCH_ID_COLUMN = "pec_match_id"


@dataclass(frozen=True)
class KeyPair:
    """One key slot: the column on each side and how it is normalized."""

    left: str
    right: str
    kind: KeyKind


def parse_key_spec(spec: str) -> KeyPair:
    """Parse ``COL[:KIND]`` or ``LEFTCOL=RIGHTCOL[:KIND]``.

    Raises:
        InvalidKeyKind: for a kind other than phone, email or raw.
        InputError: for an empty column name.
    """
    columns, colon, kind_text = spec.rpartition(":") if ":" in spec else (spec, "", "")
    left, equals, right = columns.partition("=")
    right = right if equals else left
    if not left.strip() or not right.strip():
        raise InputError(f"--key {spec!r}: a column name is empty")
    if colon and not kind_text.strip():
        raise InputError(f"--key {spec!r}: no kind after ':' (use phone, email or raw)")
    try:
        kind = KeyKind.parse(kind_text) if colon else infer_kind(left)
    except InvalidKeyKind as exc:
        raise InvalidKeyKind(f"--key {spec!r}: {exc} (for column {left.strip()!r})") from None
    return KeyPair(left.strip(), right.strip(), kind)


@dataclass(frozen=True)
class PsiLocalOptions:
    """Everything a local PSI run needs besides the two files."""

    keys: tuple[KeyPair, ...]
    reveal: Reveal
    payload: tuple[str, ...] = ()
    region: str = "CN"
    email_aliases: bool = False
    chunk_size: int = 65_536
    workers: int = 0
    timeout: float = 600.0
    align: bool = False


@dataclass(frozen=True)
class _PartyJob:
    role: Role
    path: Path
    columns: tuple[str, ...]
    payload: tuple[str, ...]
    config: PsiConfig
    rules: NormalizationRules
    kinds: tuple[KeyKind, ...]
    workdir: Path
    workers: int
    timeout: float


@dataclass
class _PartyReport:
    role: str
    rows: int
    invalid: dict[str, int] = field(default_factory=dict)
    invalid_examples: dict[str, list[int]] = field(default_factory=dict)
    matched_rows: int | None = None
    count: int | None = None
    per_key: list[int] | None = None
    output: str | None = None
    output_rows: int | None = None
    tag_collisions: int = 0
    peak_rss_mb: float = 0.0
    worker_peak_rss_mb: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)


def peak_rss_mb(who: int) -> float:
    """Peak resident memory in MiB (Linux reports KiB) of this process or its largest child."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


ProgressSink = Callable[[str, str, int, int], None]


#: Tables larger than this (bytes on disk) start their worker pool before reading the data.
EARLY_POOL_BYTES = 512 * 1024


def _engine_for(data_size: int, workers: int, early: BatchEngine | None) -> BatchEngine:
    if early is not None:
        return early
    if data_size < POOL_THRESHOLD or workers == 1:
        return InlineEngine()  # one worker: the party process computes itself, no IPC
    return PoolEngine(workers)


def write_matches(table: Path, result: PsiResult, target: Path) -> int:
    """Stream a party's own table and write its matched rows (with payloads, if any)."""
    import pandas as pd

    assert result.matched_rows is not None
    matched = pd.Index(result.matched_rows)
    payloads = result.payloads
    written = 0
    header = True
    with target.open("w", encoding="utf-8", newline="") as handle:
        for frame in iter_table(table):
            rows = frame.loc[frame.index.intersection(matched)]
            if payloads is not None:
                rows = _join_payloads(rows, payloads, result.payload_columns)
            if result.match_ids is not None:
                ids = result.match_ids
                rows = rows.assign(**{MATCH_ID_COLUMN: [ids[int(r)].hex() for r in rows.index]})
            rows.to_csv(handle, index=False, header=header)
            header = False
            written += len(rows)
    return written


def _join_payloads(
    rows: pd.DataFrame, payloads: dict[int, list[bytes]], columns: Sequence[str]
) -> pd.DataFrame:
    """One output row per (matched row, distinct payload row) pair: an inner join on any key."""
    import pandas as pd

    names = [f"{c}_right" if c in rows.columns else c for c in columns]
    out: list[list[str]] = []
    index: list[int] = []
    for row_id in rows.index:
        seen: list[list[str]] = []
        for blob in payloads.get(int(row_id), []):
            for item in json.loads(blob):
                if item not in seen:
                    seen.append(item)
        for item in seen:
            out.append(item)
            index.append(int(row_id))
    extra = pd.DataFrame(out, columns=names, index=index, dtype=object)
    return rows.loc[index].reset_index(drop=True).join(extra.reset_index(drop=True))


def _plain_cells(job: _PartyJob) -> dict[str, list[str]] | None:
    """The key cells, read without pandas, when that is all the party needs; else None.

    Raw keys of a regular CSV, with nothing else to read or write (no payload, no labeled run),
    are read with the csv module, and the party then never imports pandas (about 0.3 s).
    Anything else, or a file that reader declines, goes through pandas.
    """
    if (
        job.payload
        or job.config.labeled
        or any(k is not KeyKind.RAW for k in job.kinds)
        or table_format(job.path) != "csv"
    ):
        return None
    return read_plain_csv(job.path, job.columns)


def _read_input(
    job: _PartyJob, lap: Callable[[str], None]
) -> tuple[PartyInput, list[KeyReport], bool]:
    """Read (lap "read") and normalize (lap "normalize") a party's keys; True: without pandas."""
    from psi.prepare import prepare_input, prepare_raw_input

    cells = _plain_cells(job)
    if cells is not None:
        lap("read")
        data, reports = prepare_raw_input([(c, cells[c]) for c in job.columns])
    else:
        table = read_columns(job.path, list(dict.fromkeys(job.columns + job.payload)))
        lap("read")
        keys = [table[c].rename(c) for c in job.columns]
        payload = table[list(job.payload)] if job.payload else None
        data, reports = prepare_input(keys, job.kinds, job.rules, payload=payload)
    lap("normalize")
    return data, reports, cells is not None


def _write_output(job: _PartyJob, result: PsiResult, target: Path, plain: bool) -> int:
    """Write the matched rows; without pandas if the keys were read without it.

    Alignment ids (an added column) go through pandas: on a table the plain reader accepted,
    both readers number the rows alike, so either may write them.
    """
    if not plain or result.match_ids is not None:
        return write_matches(job.path, result, target)
    assert result.matched_rows is not None
    return write_plain_rows(job.path, sorted(int(r) for r in result.matched_rows), target)


def _party_main(job: _PartyJob, conn: Connection, events: Any) -> None:
    """Entry point of a party process: read own table, run the protocol, write own output."""
    engine: BatchEngine | None = None
    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = round(now - clock, 3)
        clock = now

    try:
        if job.path.stat().st_size > EARLY_POOL_BYTES and job.workers != 1:
            engine = PoolEngine(job.workers)
        data, reports, plain = _read_input(job, lap)
        engine = _engine_for(sum(len(v) for v in data.slot_values), job.workers, engine)

        def progress(stage: str, done: int, total: int) -> None:
            events.put(("progress", job.role.value, stage, done, total))

        party = PsiParty(job.role, job.config, data, engine=engine, progress=progress)
        result = run_party(party, ConnectionChannel(conn), timeout=job.timeout)
        lap("protocol")
        report = _PartyReport(
            role=job.role.value,
            rows=data.rows,
            invalid={r.column: r.invalid for r in reports},
            invalid_examples={r.column: list(r.examples) for r in reports},
            matched_rows=None if result.matched_rows is None else int(result.matched_rows.size),
            count=result.count,
            per_key=None if result.per_key is None else list(result.per_key),
            tag_collisions=result.tag_collisions,
        )
        if result.matched_rows is not None:
            name = f"{job.role.value}.csv"
            report.output_rows = _write_output(job, result, job.workdir / name, plain)
            report.output = name
        lap("write")
        engine.close()
        engine = None
        report.phases = phases
        report.peak_rss_mb = peak_rss_mb(resource.RUSAGE_SELF)
        report.worker_peak_rss_mb = peak_rss_mb(resource.RUSAGE_CHILDREN)
        events.put(("result", job.role.value, asdict(report)))
    except PecError as exc:
        kind = "input" if isinstance(exc, InputError) else "protocol"
        events.put(("error", job.role.value, kind, f"{type(exc).__name__}: {exc}"))
    except Exception as exc:  # report, never hang the parent
        events.put(("error", job.role.value, "internal", f"{type(exc).__name__}: {exc}"))
    finally:
        if engine is not None:
            engine.close()
        conn.close()


def check_inputs(left: Path, right: Path, options: PsiLocalOptions) -> None:
    """Validate files, columns and options before any work starts.

    Raises:
        InputError: naming the file and column (or option) that is wrong.
    """
    if not options.keys:
        raise InputError("at least one --key is needed")
    if options.payload and options.reveal is not Reveal.LEFT:
        raise InputError("--payload needs --reveal left: only the left side receives payloads")
    if options.align and options.reveal is not Reveal.BOTH:
        raise InputError("--align needs --reveal both: both sides must learn their rows")
    try:
        NormalizationRules(options.region, options.email_aliases)
    except ValueError as exc:
        raise InputError(f"--region: {exc}") from None
    left_info = inspect_table(left, role="left")
    right_info = inspect_table(right, role="right")
    left_info.require([k.left for k in options.keys], role="left")
    right_info.require([k.right for k in options.keys], role="right")
    right_info.require(options.payload, role="right")
    if options.align:
        refuse_match_id_column(left_info, "left")
        refuse_match_id_column(right_info, "right")


def refuse_match_id_column(info: TableInfo, role: str) -> None:
    """``--align`` adds :data:`MATCH_ID_COLUMN`: a table that has one would lose its values.

    Raises:
        InputError: naming the file.
    """
    if MATCH_ID_COLUMN in info.columns:
        raise InputError(
            f"{role} file {info.path}: already has a column {MATCH_ID_COLUMN!r}, which --align "
            "adds; rename it"
        )


def run_psi_local(
    left: Path,
    right: Path,
    out: Path,
    options: PsiLocalOptions,
    *,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """Run a PSI between two local tables as two processes and publish the outputs in ``out``.

    Returns the summary (also written to ``out/summary.json``).

    Raises:
        InputError: a file or column is missing or unreadable (nothing is written).
        PsiError: the protocol failed or a party died (nothing is written).
    """
    started = time.perf_counter()
    check_inputs(left, right, options)
    rules = NormalizationRules(options.region, options.email_aliases)
    kinds = tuple(k.kind for k in options.keys)
    config = PsiConfig(
        run_id=uuid.uuid4().hex,
        reveal=options.reveal,
        kinds=tuple(k.value for k in kinds),
        rules=rules.version(kinds),
        labeled=bool(options.payload),
        chunk_size=options.chunk_size,
        align=options.align,
    )
    out = out.resolve()
    workdir = out.parent / f".{out.name}.partial-{config.run_id[:12]}"
    made = _prepare_output(out, workdir)
    published = False
    # both parties share this machine: by default each takes half the cores (one: compute inline)
    workers = options.workers or max(1, (os.cpu_count() or 2) // 2)
    jobs = {
        Role.LEFT: _PartyJob(
            Role.LEFT,
            left,
            tuple(k.left for k in options.keys),
            (),
            config,
            rules,
            kinds,
            workdir,
            workers,
            options.timeout,
        ),
        Role.RIGHT: _PartyJob(
            Role.RIGHT,
            right,
            tuple(k.right for k in options.keys),
            options.payload,
            config,
            rules,
            kinds,
            workdir,
            workers,
            options.timeout,
        ),
    }
    try:
        reports = run_parties(_party_main, jobs, "pec-psi", options.timeout, progress)
        summary = _summary(left, right, options, config, reports, time.perf_counter() - started)
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        try:
            publish(workdir, out)
        except OSError as exc:
            raise PsiError(f"--out {out}: cannot move the outputs in ({exc.strerror})") from None
        published = True
        return summary
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not published:  # a failed run leaves no folder behind that it made
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:
                    break


def _prepare_output(out: Path, workdir: Path) -> list[Path]:
    """Check that ``out`` can take the outputs, and make the private folder they are written to.

    Returns the folders above ``out`` that had to be made, deepest first.

    Raises:
        InputError: ``out`` or a folder above it is a file, or cannot be made or written to.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a directory")
    missing = [folder for folder in out.parents if not folder.exists()]
    nearest = out.parents[len(missing)]  # ``out`` is absolute, and the root always exists
    if not nearest.is_dir():
        raise InputError(f"--out {out}: {nearest} is a file, not a directory")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: cannot write there (permission denied)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        workdir.mkdir()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"--out {out}: cannot write there ({reason})") from None
    return missing


def run_parties(
    target: Callable[[Any, Connection, Any], None],
    jobs: dict[Role, Any],
    name: str,
    timeout: float,
    progress: ProgressSink | None,
) -> dict[str, dict[str, Any]]:
    """Start the left and right party processes, connected by a pipe; collect their reports.

    ``target(job, connection, events)`` runs in each process and posts its progress, result or
    error to ``events``. Both processes are stopped (killed if needed) before this returns.

    Raises:
        InputError: a party could not use its input.
        PsiError: a party failed, died, or made no progress within ``timeout``.
    """
    # fork when this process has one thread (the CLI): the parties inherit its imports
    method = start_method()
    ctx = get_context("fork") if method == "fork" else get_context("spawn")
    conn_left, conn_right = ctx.Pipe(duplex=True)
    events = ctx.Queue()
    ends = {Role.LEFT: (conn_left, conn_right), Role.RIGHT: (conn_right, conn_left)}
    processes = {
        role: ctx.Process(
            target=_party_entry,
            # a forked party inherits the peer's end too, and must close it to see EOF if the
            # peer dies; a spawned one receives only its own
            args=(target, job, ends[role][0], ends[role][1] if method == "fork" else None, events),
            name=f"{name}-{role.value}",
        )
        for role, job in jobs.items()
    }
    try:
        for process in processes.values():
            process.start()
        conn_left.close()
        conn_right.close()
        return collect_reports(processes, events, timeout, progress)
    finally:
        for process in processes.values():
            if process.is_alive():
                process.kill()
            process.join(timeout=10)


def _party_entry(
    target: Callable[[Any, Connection, Any], None],
    job: Any,
    own: Connection,
    peer_end: Connection | None,
    events: Any,
) -> None:
    if peer_end is not None:
        peer_end.close()
    target(job, own, events)


#: Once a party has failed, how long to wait for the other's account before choosing the cause.
SETTLE_SECONDS = 2.0


def collect_reports(
    processes: dict[Role, Any], events: Any, timeout: float, progress: ProgressSink | None
) -> dict[str, dict[str, Any]]:
    """Feed progress events to ``progress`` and gather each party's result.

    When a party fails, its peer usually fails right after (the link closed): both accounts are
    awaited (at most :data:`SETTLE_SECONDS`) and the cause is reported, not its echo.

    Raises:
        InputError: a party could not use its input.
        PsiError: a party failed or died, or no event came within ``timeout``.
    """
    reports: dict[str, dict[str, Any]] = {}
    errors: dict[str, tuple[str, str]] = {}
    settle = float("inf")
    last_event = time.monotonic()
    while len(reports) + len(errors) < len(processes) and time.monotonic() < settle:
        try:
            event = events.get(timeout=0.2)
        except queue.Empty:
            event = None
        if event is None:
            silent = [r for r in processes if r.value not in reports and r.value not in errors]
            dead = [r for r in silent if not processes[r].is_alive()]
            if dead:
                time.sleep(0.5)  # let a last message from the dying party arrive
                if events.empty():
                    if errors:
                        break
                    raise PsiAborted(f"the {dead[0].value} party exited without a result")
            if time.monotonic() - last_event > timeout:
                raise PsiAborted(f"no progress from the parties within {timeout:.0f} s")
            continue
        last_event = time.monotonic()
        if event[0] == "progress" and progress is not None:
            progress(event[1], event[2], event[3], event[4])
        elif event[0] == "result":
            reports[event[1]] = event[2]
        elif event[0] == "error":
            errors[event[1]] = (event[2], event[3])
            settle = min(settle, time.monotonic() + SETTLE_SECONDS)
    if errors:
        raise _cause(errors)
    return reports


def _cause(errors: dict[str, tuple[str, str]]) -> PecError:
    """The error to report: a party's input first, then anything but the peer's echo of it."""
    role, (kind, message) = min(
        errors.items(),
        key=lambda item: (item[1][0] != "input", item[1][1].startswith("PsiAborted")),
    )
    if kind == "input":
        detail = message.split(": ", 1)[-1]
        # "left file x.csv: ..." as the checks before the run word it; anything else after ": "
        return InputError(f"{role} {detail}" if detail.startswith("file ") else f"{role}: {detail}")
    return PsiError(f"the {role} party failed: {message}")


def _summary(
    left: Path,
    right: Path,
    options: PsiLocalOptions,
    config: PsiConfig,
    reports: dict[str, dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    lrep, rrep = reports["left"], reports["right"]
    reveal = options.reveal
    if reveal is Reveal.COUNT:
        intersection = lrep["count"]
    elif reveal is Reveal.RIGHT:
        intersection = rrep["matched_rows"]
    else:
        intersection = lrep["matched_rows"]
    learner = rrep if reveal is Reveal.RIGHT else lrep
    per_key_cols = [k.right if reveal is Reveal.RIGHT else k.left for k in options.keys]
    return {
        "protocol": PROTOCOL,
        "run_id": config.run_id,
        "reveal": reveal.value,
        "left": str(left),
        "right": str(right),
        "keys": [{"left": k.left, "right": k.right, "kind": k.kind.value} for k in options.keys],
        "rules": config.rules,
        "left_rows": lrep["rows"],
        "right_rows": rrep["rows"],
        "intersection": intersection,
        "matched_left_rows": lrep["matched_rows"],
        "matched_right_rows": rrep["matched_rows"],
        "matched_left_records": lrep["count"],
        "matched_right_records": rrep["count"],
        "per_key": dict(zip(per_key_cols, learner["per_key"] or [], strict=False)),
        "left_invalid": lrep["invalid"],
        "right_invalid": rrep["invalid"],
        "left_invalid_examples": lrep["invalid_examples"],
        "right_invalid_examples": rrep["invalid_examples"],
        "payload_columns": list(options.payload),
        "outputs": sorted(r["output"] for r in (lrep, rrep) if r["output"]),
        "phase_seconds": {"left": lrep["phases"], "right": rrep["phases"]},
        "peak_rss_mb": {
            side: {"party": rep["peak_rss_mb"], "largest_worker": rep["worker_peak_rss_mb"]}
            for side, rep in (("left", lrep), ("right", rrep))
        },
        "seconds": round(seconds, 3),
    }


def publish(workdir: Path, out: Path, names: tuple[str, ...] = OUTPUT_NAMES) -> None:
    """Move the finished outputs into ``out``; remove stale outputs of an earlier run.

    ``names[0]`` is the summary: it is moved last, because its presence marks completion.
    """
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        stale = out / name
        if stale.exists() and not (workdir / name).exists():
            stale.unlink()
    for name in names[1:] + names[:1]:
        source = workdir / name
        if source.exists():
            os.replace(source, out / name)
