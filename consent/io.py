"""Reading event files (CSV or JSONL) row by row; writing cohort files.

Rows are streamed: a file of any size is read with bounded memory. Errors name the file, the
1-based data row and the field, never the value.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consent.errors import ConsentInputError
from consent.model import REQUIRED_CONSENT_FIELDS, ConsentEvent, SubjectKeyer, parse_event

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
        if fmt == "csv":
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [f for f in REQUIRED_CONSENT_FIELDS if f not in header]
            if missing:
                raise ConsentInputError(
                    "the header lacks this required column",
                    field=missing[0],
                    row=0,
                    source=path.name,
                )
            for n, row in enumerate(reader, start=1):
                if None in row:
                    raise ConsentInputError(
                        "has more values than the header has columns", row=n, source=path.name
                    )
                yield n, row
        else:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    raise ConsentInputError("is not valid JSON", row=n, source=path.name) from None
                if not isinstance(obj, dict):
                    raise ConsentInputError("must be a JSON object", row=n, source=path.name)
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
