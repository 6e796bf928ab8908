"""Reading a party's own tables (CSV or Parquet) with errors that say what and where.

Cells are read as text, exactly as written, so that output rows reproduce the input rows and
identifiers such as ``00123`` keep their leading zeros. Error messages name the file and the
column, never a cell value.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from operator import methodcaller
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pec.errors import InputError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

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
                # The names are not listed: in a file without a header row they are the first
                # row's identifiers. Only names close to the wanted one are suggested.
                close = _close_names(column, self.columns)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise InputError(
                    f"{who}file {self.path}: no column {column!r} among its "
                    f"{len(self.columns)} columns (the first row must name them){hint}"
                )


def _close_names(wanted: str, names: Sequence[str]) -> list[str]:
    """Up to 3 of ``names`` that differ from ``wanted`` only in case or by a typo.

    Only names that look like column names are offered (see :func:`_nameish`): without a header
    row, the "names" are a person's identifiers, and one close to what was typed must not be
    printed.
    """
    import difflib

    lowered = {name.lower(): name for name in names if _nameish(name)}
    if wanted.lower() in lowered:
        return [lowered[wanted.lower()]]
    return [lowered[n] for n in difflib.get_close_matches(wanted.lower(), lowered, n=3, cutoff=0.8)]


def _nameish(name: str) -> bool:
    """Whether a header cell may be printed: no '@', at most 4 digits, at most 64 characters.

    Phone numbers, emails and most account or device ids fail this; real column names pass.
    """
    return len(name) <= 64 and "@" not in name and sum(c.isdigit() for c in name) <= 4


def _duplicate_names(columns: Sequence[str]) -> str | None:
    """How to name the first repeated column name (its positions, 1-based), or None."""
    first: dict[str, int] = {}
    for position, name in enumerate(columns, start=1):
        if name in first:
            shown = f"{name!r} " if _nameish(name) else ""
            return f"column name {shown}appears twice (columns {first[name]} and {position})"
        first[name] = position
    return None


def inspect_table(path: Path, *, role: str = "") -> TableInfo:
    """Read only a table's header (and first row) to validate it before any work starts.

    Raises:
        InputError: missing file, unreadable format, no header or no rows.
    """
    who = f"{role} " if role else ""
    if path.is_dir():
        raise InputError(f"{who}file {path}: is a directory, not a table file")
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
                # a line of separators only (",,") is a row of empty cells, as pandas reads it
                has_rows = any(len(row) > 1 or any(c.strip() for c in row) for row in reader)
    except (csv.Error, UnicodeDecodeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{who}file {path}: cannot read as {fmt.upper()} ({reason})") from exc
    except Exception as exc:  # pyarrow raises its own hierarchy for corrupt files
        raise InputError(f"{who}file {path}: cannot read as {fmt.upper()}") from exc
    if not columns:
        raise InputError(f"{who}file {path}: has no header row")
    duplicate = _duplicate_names(columns)
    if duplicate:  # pandas would rename the second (``x.1``): a key would be ambiguous
        raise InputError(f"{who}file {path}: {duplicate}; names must be distinct")
    if not has_rows:
        raise InputError(f"{who}file {path}: has no rows")
    return TableInfo(path, columns, has_rows)


def read_columns(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read the given columns of a table, every cell as text (missing cells as empty strings)."""
    import pandas as pd

    if table_format(path) == "parquet":
        import pyarrow.parquet as pq

        return _arrow_as_text(pq.read_table(path, columns=list(columns)))
    # Every column is parsed (a chunk at a time, keeping only the wanted ones): with ``usecols``
    # pandas would pass over a row with too many fields instead of refusing the file.
    return pd.concat([chunk[list(columns)] for chunk in iter_table(path)], ignore_index=True)


class _LongRow(Exception):
    """A data row has more fields than the header."""


def _aligned(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``, after checking that pandas did not shift its columns.

    When the first data row has one field more than the header (a trailing comma, say), pandas
    takes the first field as the row label and every column its right-hand neighbour's values.
    """
    import pandas as pd

    if not isinstance(frame.index, pd.RangeIndex):
        raise _LongRow
    return frame


@contextmanager
def _csv_errors(path: Path) -> Iterator[None]:
    """Turn pandas' errors on a CSV body into an :class:`InputError` naming the file and line.

    :func:`inspect_table` checked the header; a bad row further down surfaces only here.
    """
    import pandas as pd

    try:
        yield
    except UnicodeDecodeError:
        raise InputError(f"file {path}: {_first_undecodable_line(path)}") from None
    except (pd.errors.ParserError, csv.Error, _LongRow) as exc:
        # the csv module counts lines as the file has them (pandas counts records)
        reason = _first_long_row(path)
        if reason is None:  # pandas' other messages name a row or byte offset, never a cell
            reason = str(exc).splitlines()[-1].removeprefix("Error tokenizing data. ")
        raise InputError(f"file {path}: cannot read as CSV ({reason})") from None


def _first_long_row(path: Path) -> str | None:
    """Where a CSV first has a row with more fields than its header, if the csv module sees one."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            width = len(next(reader, []))
            for row in reader:
                if len(row) > width:
                    return f"line {reader.line_num} has {len(row)} fields, the header {width}"
    except csv.Error:
        return None
    return None


def _first_undecodable_line(path: Path) -> str:
    """Where a file stops being UTF-8: its line number and the byte's column (both 1-based)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number} is not UTF-8 (byte {exc.start + 1} of the line)"
    return "is not UTF-8"


def _arrow_as_text(table: pa.Table) -> pd.DataFrame:
    """A Parquet table as text cells, integers written as integers.

    pandas turns an integer column with a missing value into floats (``13812345678.0``), which
    would neither match nor reproduce the file, so such columns become text in Arrow first.
    """
    import pyarrow as pa

    columns = [
        column.cast(pa.string()) if pa.types.is_integer(column.type) else column
        for column in table.columns
    ]
    return _as_text(pa.table(columns, names=table.column_names).to_pandas())


class _Irregular(Exception):
    """The file is not a regular CSV: leave it to pandas."""


#: Rows the plain reader checks and copies at a time: the work runs in C over a list of rows,
#: and memory stays bounded by the batch, not the file.
_PLAIN_BATCH = 16_384
_HAS_COMMA = methodcaller("__contains__", ",")


def _plain_columns(
    handle: TextIO, *, quoted: bool = True
) -> tuple[list[str], Iterator[list[list[str]]]]:
    """The header, and batches of data rows (one list of cells per column) of a regular CSV.

    Regular: a header of distinct names, and every other line either empty (skipped, as pandas
    skips it) or holding exactly one field per header name; with a single column, no row whose
    only field is blank (pandas' reading of those is its own). ``read_plain_csv`` also declines
    files with a carriage return that does not end a CR-LF pair. Anything else raises
    ``_Irregular``. A batch is checked whole before it is yielded, so no row of a batch that
    breaks a rule is ever used.

    ``quoted=False`` promises that the file holds no quote character (see :func:`_scan_bytes`):
    then a field is the text between commas, and lines are split without the csv module, which
    gives the same cells several times faster.
    """
    if quoted:
        reader = csv.reader(handle)
        header = next(reader, None)
    else:
        first = handle.readline().rstrip("\r\n")
        header = first.split(",") if first else []
    if not header or len(set(header)) != len(header) or not all(h.strip() for h in header):
        raise _Irregular  # pandas renames duplicate and blank names, or skips a blank header
    width = len(header)
    batches: Iterator[list[list[str]]]
    if quoted:
        batches = (
            _columns(rows, width) for rows in iter(lambda: list(islice(reader, _PLAIN_BATCH)), [])
        )
    else:
        batches = _unquoted_columns(handle, width)
    return header, _checked(batches, width)


def _columns(rows: list[list[str]], width: int) -> list[list[str]]:
    """A batch of rows (``[]`` for an empty line, which is skipped) as columns of cells."""
    if [] in rows:
        rows = [row for row in rows if row]
    if rows and (min(map(len, rows)) != width or max(map(len, rows)) != width):
        raise _Irregular
    if not rows:
        return [[] for _ in range(width)]
    return [list(cells) for cells in zip(*rows, strict=True)]


def _unquoted_columns(handle: TextIO, width: int) -> Iterator[list[list[str]]]:
    """Batches of columns of a file without quote characters or lone CRs."""
    while lines := handle.readlines(_PLAIN_BATCH * 32):
        stripped = [line.rstrip("\r\n") for line in lines]
        if width == 1 and not any(map(_HAS_COMMA, stripped)):
            yield [[line for line in stripped if line] if "" in stripped else stripped]
        else:
            yield _columns([line.split(",") if line else [] for line in stripped], width)


def _checked(batches: Iterator[list[list[str]]], width: int) -> Iterator[list[list[str]]]:
    for columns in batches:
        if width == 1 and not all(map(str.strip, columns[0])):
            raise _Irregular
        if columns[0]:
            yield columns


@dataclass(frozen=True)
class _ByteScan:
    lone_cr: bool  # a carriage return not followed by a line feed
    quoted: bool  # a quote character anywhere


def _scan_bytes(path: Path, block: int = 1 << 20) -> _ByteScan:
    """One pass over the file's bytes: lone carriage returns, and quote characters.

    Lines ended by a lone CR (old Mac files) are read differently by pandas' parser and the csv
    module in corner cases, so the plain reader leaves such files to pandas. A file without any
    quote character can be split into fields without the csv module.
    """
    lone_cr = quoted = False
    with path.open("rb") as handle:
        carry = b""
        while chunk := handle.read(block):
            data = carry + chunk
            if data.count(b"\r") != data.count(b"\r\n") + data.endswith(b"\r"):
                lone_cr = True
                break
            quoted = quoted or b'"' in chunk
            carry = data[-1:]
        lone_cr = lone_cr or carry == b"\r"
    return _ByteScan(lone_cr, quoted)


def read_plain_csv(path: Path, columns: Sequence[str]) -> dict[str, list[str]] | None:
    """The given columns of a regular CSV file, read with the csv module (no pandas import).

    For a party whose work needs nothing else from pandas this saves its import (about 0.3 s).
    Returns None for anything irregular (see ``_plain_columns``), not UTF-8, or unreadable: the
    caller then reads the file with :func:`read_columns`, which decides how to interpret it or
    says what is wrong. On a regular file both give the same cells in the same rows (tested).
    """
    try:
        scan = _scan_bytes(path)
        if scan.lone_cr:
            return None
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header, batches = _plain_columns(handle, quoted=scan.quoted)
            if any(c not in header for c in columns):
                return None
            picks = [header.index(c) for c in columns]
            cells: list[list[str]] = [[] for _ in picks]
            for batch in batches:
                for out, at in zip(cells, picks, strict=True):
                    out.extend(batch[at])
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
        scan = _scan_bytes(path)
        if scan.lone_cr:
            raise _Irregular
        with (
            path.open(encoding="utf-8-sig", newline="") as handle,
            target.open("w", encoding="utf-8", newline="") as out,
        ):
            writer = csv.writer(out, lineterminator="\n")
            header, batches = _plain_columns(handle, quoted=scan.quoted)
            writer.writerow(header)
            first = 0  # the number of the batch's first row
            for columns in batches:
                if next_row is None:
                    break
                end = first + len(columns[0])
                picked: list[int] = []
                while next_row is not None and next_row < end:
                    picked.append(next_row - first)
                    next_row = next(wanted, None)
                writer.writerows([cells[i] for cells in columns] for i in picked)
                written += len(picked)
                first = end
    except (_Irregular, csv.Error, UnicodeDecodeError, OSError) as exc:
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
        import pyarrow as pa
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            frame = _arrow_as_text(pa.Table.from_batches([batch]))
            frame.index = pd.RangeIndex(offset, offset + len(frame))
            offset += len(frame)
            yield frame
        return
    with _csv_errors(path):
        reader = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            chunksize=chunk_rows,
            quoting=csv.QUOTE_MINIMAL,
        )
        for frame in reader:
            frame = _aligned(frame)
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
