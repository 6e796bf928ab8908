"""Reading a party's own tables (CSV or Parquet) with errors that say what and where.

Cells are read as text, exactly as written, so that output rows reproduce the input rows and
identifiers such as ``00123`` keep their leading zeros. Error messages name the file and the
column, never a cell value.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pec.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

# pandas and pyarrow are imported where used: the CLI process only inspects headers, and should
# start fast; the party processes, which read whole columns, pay for the import.

__all__ = [
    "TableInfo",
    "inspect_table",
    "iter_table",
    "read_columns",
    "read_plain_csv",
    "table_format",
    "write_plain_rows",
]

_PARQUET_SUFFIXES = {".parquet", ".pq"}


def table_format(path: Path) -> str:
    """``parquet`` or ``csv``, from the suffix or, failing that, the file's magic bytes."""
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return "parquet"
    with path.open("rb") as handle:
        return "parquet" if handle.read(4) == b"PAR1" else "csv"


class TableInfo:
    """A table's columns and whether it has at least one row."""

    def __init__(self, path: Path, columns: list[str], has_rows: bool) -> None:
        self.path = path
        self.columns = columns
        self.has_rows = has_rows

    def require(self, columns: Sequence[str], *, role: str = "") -> None:
        """Check that every column exists.

        Raises:
            InputError: naming the file and the first missing column.
        """
        for column in columns:
            if column not in self.columns:
                who = f"{role} " if role else ""
                known = ", ".join(self.columns[:20])
                raise InputError(f"{who}file {self.path}: no column {column!r} (columns: {known})")


def inspect_table(path: Path, *, role: str = "") -> TableInfo:
    """Read only a table's header (and first row) to validate it before any work starts.

    Raises:
        InputError: missing file, unreadable format, no header or no rows.
    """
    who = f"{role} " if role else ""
    if not path.is_file():
        raise InputError(f"{who}file {path}: not found")
    fmt = table_format(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            columns = [str(c) for c in meta.schema_arrow.names]
            has_rows = meta.metadata.num_rows > 0
        else:
            # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first name
            with path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle)
                columns = list(next(reader, []))
                has_rows = any(any(cell.strip() for cell in row) for row in reader)
    except (csv.Error, UnicodeDecodeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{who}file {path}: cannot read as {fmt.upper()} ({reason})") from exc
    except Exception as exc:  # pyarrow raises its own hierarchy for corrupt files
        raise InputError(f"{who}file {path}: cannot read as {fmt.upper()}") from exc
    if not columns:
        raise InputError(f"{who}file {path}: has no header row")
    if not has_rows:
        raise InputError(f"{who}file {path}: has no rows")
    return TableInfo(path, columns, has_rows)


def read_columns(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read the given columns of a table, every cell as text (missing cells as empty strings)."""
    import pandas as pd

    if table_format(path) == "parquet":
        import pyarrow.parquet as pq

        return _as_text(pq.read_table(path, columns=list(columns)).to_pandas())
    frame = pd.read_csv(
        path, dtype=str, usecols=list(columns), keep_default_na=False, na_filter=False
    )
    return frame[list(columns)]


class _Irregular(Exception):
    """The file is not a regular CSV: leave it to pandas."""


def _plain_rows(handle: Iterator[str]) -> Iterator[list[str]]:
    """The header, then every data row, of a regular CSV; raises ``_Irregular`` otherwise.

    Regular: a header of distinct names, and every other line either empty (skipped, as pandas
    skips it) or holding exactly one field per header name; with a single column, no row whose
    only field is blank (pandas' reading of those is its own). ``read_plain_csv`` also declines
    files with a carriage return that does not end a CR-LF pair.
    """
    reader = csv.reader(handle)
    header = next(reader, None)
    if not header or len(set(header)) != len(header) or not all(h.strip() for h in header):
        raise _Irregular  # pandas renames duplicate and blank names, or skips a blank header
    yield header
    width = len(header)
    for row in reader:
        if not row:
            continue
        if len(row) != width or (width == 1 and not row[0].strip()):
            raise _Irregular
        yield row


def _has_lone_cr(path: Path, block: int = 1 << 20) -> bool:
    """Whether the file holds a carriage return not followed by a line feed.

    Lines ended by a lone CR (old Mac files) are read differently by pandas' parser and the csv
    module in corner cases, so the plain reader leaves such files to pandas.
    """
    with path.open("rb") as handle:
        carry = b""
        while chunk := handle.read(block):
            data = carry + chunk
            if data.count(b"\r") != data.count(b"\r\n") + data.endswith(b"\r"):
                return True
            carry = data[-1:]
        return carry == b"\r"


def read_plain_csv(path: Path, columns: Sequence[str]) -> dict[str, list[str]] | None:
    """The given columns of a regular CSV file, read with the csv module (no pandas import).

    For a party whose work needs nothing else from pandas this saves its import (about 0.3 s).
    Returns None for anything irregular (see ``_plain_rows``), not UTF-8, or unreadable: the
    caller then reads the file with :func:`read_columns`, which decides how to interpret it or
    says what is wrong. On a regular file both give the same cells in the same rows (tested).
    """
    try:
        if _has_lone_cr(path):
            return None
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = _plain_rows(handle)
            header = next(rows)
            if any(c not in header for c in columns):
                return None
            picks = [header.index(c) for c in columns]
            cells: list[list[str]] = [[] for _ in picks]
            for row in rows:
                for out, at in zip(cells, picks, strict=True):
                    out.append(row[at])
    except (_Irregular, csv.Error, UnicodeDecodeError, OSError):
        return None
    return dict(zip(columns, cells, strict=True))


def write_plain_rows(path: Path, rows: Sequence[int], target: Path) -> int:
    """Copy the data rows numbered ``rows`` (0-based, ascending) of a regular CSV to ``target``.

    The rows as :func:`read_plain_csv` numbers them, written as pandas writes a frame of text
    (the csv module, minimal quoting, newline line ends).

    Raises:
        InputError: the file stopped being a regular CSV, or lost rows, since it was read.
    """
    wanted = iter(rows)
    next_row = next(wanted, None)
    written = 0
    try:
        with (
            path.open(encoding="utf-8-sig", newline="") as handle,
            target.open("w", encoding="utf-8", newline="") as out,
        ):
            writer = csv.writer(out, lineterminator="\n")
            source = _plain_rows(handle)
            header = next(source)
            writer.writerow(header)
            for number, row in enumerate(source):
                if next_row is None:
                    break
                if number == next_row:
                    writer.writerow(row)
                    written += 1
                    next_row = next(wanted, None)
    except (_Irregular, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"file {path}: changed while the run was using it") from exc
    if next_row is not None:
        raise InputError(f"file {path}: changed while the run was using it (rows are missing)")
    return written


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    text: pd.DataFrame = frame.astype(object).where(frame.notna(), "").astype(str)
    return text


def iter_table(path: Path, chunk_rows: int = 200_000) -> Iterator[pd.DataFrame]:
    """Stream a whole table in chunks of rows, every cell as text, with a 0-based RangeIndex."""
    import pandas as pd

    offset = 0
    if table_format(path) == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            frame = _as_text(batch.to_pandas())
            frame.index = pd.RangeIndex(offset, offset + len(frame))
            offset += len(frame)
            yield frame
        return
    reader = pd.read_csv(
        path,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        chunksize=chunk_rows,
        quoting=csv.QUOTE_MINIMAL,
    )
    for frame in reader:
        frame.index = pd.RangeIndex(offset, offset + len(frame))
        offset += len(frame)
        yield frame


def iter_sql_table(url: str, table: str, chunk_rows: int = 200_000) -> Iterator[pd.DataFrame]:
    """Stream a SQL table (``name`` or ``schema.name``) in chunks, every cell as text.

    The table is reflected first (so the name is checked and quoted by SQLAlchemy, never pasted
    into SQL) and read through a server-side cursor where the database has one.

    Raises:
        InputError: the database or the table cannot be read (the URL, which may hold a
            password, is never part of the message).
    """
    import pandas as pd
    from sqlalchemy import MetaData, Table, create_engine, select
    from sqlalchemy.exc import SQLAlchemyError

    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    schema, _, name = table.rpartition(".")
    try:
        engine = create_engine(url)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise InputError(f"SQL table {table!r}: bad database URL ({type(exc).__name__})") from None
    try:
        with engine.connect() as conn:
            reflected = Table(name, MetaData(schema=schema or None), autoload_with=conn)
            result = conn.execution_options(stream_results=True).execute(select(reflected))
            columns = list(result.keys())
            offset = 0
            while rows := result.fetchmany(chunk_rows):
                frame = _as_text(pd.DataFrame([tuple(r) for r in rows], columns=columns))
                frame.index = pd.RangeIndex(offset, offset + len(frame))
                offset += len(frame)
                yield frame
    except SQLAlchemyError as exc:
        raise InputError(f"SQL table {table!r}: cannot be read ({type(exc).__name__})") from None
    finally:
        engine.dispose()
