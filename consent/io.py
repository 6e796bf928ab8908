"""Reading event files (CSV or JSONL) row by row; writing cohort files.

Rows are streamed: a file of any size is read with bounded memory. Errors name the file, the
1-based data row and the field, never the value. A large file is parsed by a worker process
while the caller writes the previous batch to the database (:func:`iter_draft_batches`); the
worker only reads the file and never touches the ledger.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from consent.errors import ConsentError, ConsentInputError
from consent.model import (
    REQUIRED_CONSENT_FIELDS,
    ConsentEvent,
    Draft,
    SubjectKeyer,
    draft_of,
    parse_event,
)

#: Rows per batch handed from the parser to the writer.
BATCH_ROWS = 5_000
#: Files at least this large are parsed in a worker process (start-up costs about 0.5 s).
WORKER_MIN_BYTES = 4 << 20

csv.field_size_limit(1 << 20)


def detect_format(path: Path) -> str:
    """Return ``"csv"`` or ``"jsonl"`` from the file name.

    Raises:
        ConsentInputError: another extension.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ConsentInputError("must end in .csv, .jsonl or .ndjson", source=path.name)


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, row)`` from a CSV (header row required) or JSONL file.

    Raises:
        ConsentInputError: unreadable file, missing columns, malformed JSON.
    """
    fmt = detect_format(path)
    try:
        fh = path.open("r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ConsentInputError(f"cannot be read ({exc.strerror})", source=path.name) from None
    with fh:
        try:
            yield from _rows(fh, fmt, path.name)
        except UnicodeDecodeError:
            raise ConsentInputError("is not UTF-8 text", source=path.name) from None
        except csv.Error:
            raise ConsentInputError("is not a well-formed CSV file", source=path.name) from None


def _rows(fh: Any, fmt: str, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if fmt == "csv":
        # csv.reader and zip, as csv.DictReader does but without its per-row overhead:
        # blank lines are skipped, missing trailing values read as absent.
        reader = csv.reader(fh)
        header = next(reader, [])
        missing = [f for f in REQUIRED_CONSENT_FIELDS if f not in header]
        if missing:
            raise ConsentInputError(
                "the header lacks this required column",
                field=missing[0],
                row=0,
                source=name,
            )
        width = len(header)
        n = 0
        for values in reader:
            if not values:
                continue
            n += 1
            if len(values) > width:
                raise ConsentInputError(
                    "has more values than the header has columns", row=n, source=name
                )
            yield n, dict(zip(header, values, strict=False))
    else:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise ConsentInputError("is not valid JSON", row=n, source=name) from None
            if not isinstance(obj, dict):
                raise ConsentInputError("must be a JSON object", row=n, source=name)
            yield n, obj


def iter_events(path: Path, keyer: SubjectKeyer) -> Iterator[tuple[int, ConsentEvent]]:
    """Yield validated events of a file; the first bad row raises, naming row and field.

    Raises:
        ConsentInputError: a bad row or an unreadable file.
    """
    for n, row in iter_rows(path):
        try:
            yield n, parse_event(row, keyer)
        except ConsentInputError as exc:
            raise exc.located(row=n, source=path.name) from None


def _batches(path: Path, keyer: SubjectKeyer) -> Iterator[list[Draft]]:
    batch: list[Draft] = []
    for n, ev in iter_events(path, keyer):
        batch.append(draft_of(n, ev))
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


_FRAME = struct.Struct(">Q")


def _send(out: IO[bytes], message: tuple[str, Any]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(data)))
    out.write(data)
    out.flush()


def _receive(stream: IO[bytes]) -> tuple[str, Any]:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise ConsentError("the import's parser process ended unexpectedly")
    (length,) = _FRAME.unpack(head)
    data = stream.read(length)
    if len(data) < length:
        raise ConsentError("the import's parser process ended unexpectedly")
    message: tuple[str, Any] = pickle.loads(data)
    return message


def parse_worker_main() -> None:
    """Entry point of the parser process (``python -m consent._import_worker FILE``).

    Reads the subject key (hex) from standard input, writes ``("rows", batch)`` frames to
    standard output, then ``("done", None)`` or the error. If the importing process dies the
    next write fails (the pipe has no reader) and the worker ends.
    """
    out = sys.stdout.buffer
    try:
        keyer = SubjectKeyer(bytes.fromhex(sys.stdin.readline().strip()))
        try:
            for batch in _batches(Path(sys.argv[1]), keyer):
                _send(out, ("rows", batch))
            _send(out, ("done", None))
        except ConsentInputError as exc:
            _send(out, ("input", (exc.reason, exc.field, exc.row, exc.source)))
        except Exception as exc:  # reported to the importing process, by type only
            _send(out, ("failed", type(exc).__name__))
    except (BrokenPipeError, ConnectionResetError):
        os._exit(0)  # the importer is gone; nothing to report to


def iter_draft_batches(
    path: Path, keyer: SubjectKeyer, *, worker: bool | None = None
) -> Iterator[list[Draft]]:
    """Yield the validated events of a file as batches of drafts, in file order.

    With ``worker`` (default: files of at least :data:`WORKER_MIN_BYTES` on a machine with more
    than one CPU) a child process parses while the caller consumes, so parsing and database
    writes overlap. The first bad row raises here, after every batch before it, as the
    in-process path does.

    Raises:
        ConsentInputError: a bad row or an unreadable file.
        ConsentError: the parser process failed.
    """
    if worker is None:
        try:
            worker = (os.cpu_count() or 1) > 1 and path.stat().st_size >= WORKER_MIN_BYTES
        except OSError:
            worker = False
    if not worker:
        yield from _batches(path, keyer)
        return
    detect_format(path)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "consent._import_worker", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # The key goes over a pipe, not the command line (which other users can read).
        proc.stdin.write(keyer.secret_hex().encode("ascii") + b"\n")
        proc.stdin.close()
        while True:
            kind, value = _receive(proc.stdout)
            if kind == "rows":
                yield value
            elif kind == "done":
                return
            elif kind == "input":
                reason, field, row, source = value
                raise ConsentInputError(reason, field=field, row=row, source=source)
            else:
                raise ConsentError(f"the import's parser process failed ({value})")
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
