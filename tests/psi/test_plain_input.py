"""Raw keys of a regular CSV are read and written without pandas, with pandas' results.

``pec psi local`` reads such a table with the csv module so that its party processes never
import pandas. These tests hold that reader to what the pandas reader gives on every file it
accepts, and check that it declines the rest.
"""

import csv
import io
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pec.errors import InputError
from pec.tables import inspect_table, iter_table, read_columns, read_plain_csv, write_plain_rows
from psi.normalize import KeyKind, NormalizationRules
from psi.prepare import prepare_input, prepare_raw_input
from psi.protocol import PsiResult, Reveal
from psi.wire import Role

pytestmark = pytest.mark.unit

# characters that make CSV hard: separators, quotes, line breaks, blanks, a BOM, non-ASCII
CELL = st.text(alphabet=st.sampled_from(list('ab0 ,"\n\r\t\u00e9\ufeff')), max_size=6)
NAME = st.text(alphabet=st.sampled_from(list('idxyz ,"')), min_size=0, max_size=4)
# the same without quote characters: such files are split into fields without the csv module
BARE_CELL = st.text(alphabet=st.sampled_from(list("ab0 ,\n\r\t\u00e9\ufeff\x00")), max_size=6)
BARE_NAME = st.text(alphabet=st.sampled_from(list("idxyz ,")), min_size=0, max_size=4)


def _quote(cell: str, always: bool) -> str:
    if always or any(ch in cell for ch in ',"\n\r'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def csv_texts(draw: st.DrawFn, quotes: bool = True) -> str:
    """Mostly well-formed CSV, with the irregularities pandas and the csv module may disagree
    on: blank and whitespace lines, rows of the wrong width, raw quotes, a BOM, CR line ends.

    Without ``quotes`` no quote character appears: cells are written as they are, so a cell
    holding a comma or a line break changes the shape of its row."""
    cell, name = (CELL, NAME) if quotes else (BARE_CELL, BARE_NAME)

    def written(text: str) -> str:
        return _quote(text, draw(st.booleans())) if quotes else text

    header = draw(st.lists(name, min_size=1, max_size=3, unique=draw(st.integers(0, 5)) > 0))
    width = len(header)
    lines = [",".join(written(h) for h in header)]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["row"] * 12 + ["blank", "spaces", "short", "long"]))
        if kind == "blank":
            lines.append("")
        elif kind == "spaces":
            lines.append(" " * draw(st.integers(1, 3)))
        else:
            n = width + {"row": 0, "short": -1, "long": 1}[kind]
            cells = draw(st.lists(cell, min_size=max(n, 0), max_size=max(n, 0)))
            lines.append(",".join(written(c) for c in cells))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    return bom + end.join(lines) + draw(st.sampled_from(["", end]))


def _pandas_rows(path: Path) -> pd.DataFrame:
    return pd.concat(list(iter_table(path)))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans().flatmap(lambda quotes: csv_texts(quotes)), st.data())
def test_the_plain_reader_gives_what_pandas_gives_or_declines(
    text: str, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_bytes(text.encode("utf-8"))
        header = next(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")), [])
        plain = read_plain_csv(path, header) if header else None
        try:
            expected = read_columns(path, list(dict.fromkeys(header)))
        except Exception:
            assert plain is None  # what pandas refuses, the plain reader declines
            return
        if plain is None:
            return  # declined: pandas reads it as before
        assert list(plain) == list(expected.columns) == header
        for column in header:
            assert plain[column] == expected[column].tolist(), column
        # the matched rows are written as the pandas path writes them
        rows = len(expected)
        picked = sorted(data.draw(st.sets(st.integers(0, max(rows - 1, 0)), max_size=rows)))
        picked = [r for r in picked if r < rows]
        mine, theirs = Path(tmp) / "mine.csv", Path(tmp) / "theirs.csv"
        assert write_plain_rows(path, picked, mine) == len(picked)
        frame = _pandas_rows(path)
        frame.loc[frame.index.intersection(pd.Index(picked))].to_csv(theirs, index=False)
        assert mine.read_bytes() == theirs.read_bytes()


def _plain_outcome(text: str, quoted: bool) -> object:
    from pec.tables import _Irregular, _plain_columns

    try:
        header, batches = _plain_columns(io.StringIO(text, newline=""), quoted=quoted)
        return header, [cells for columns in batches for cells in zip(*columns, strict=True)]
    except (_Irregular, csv.Error) as exc:
        return type(exc).__name__


@settings(max_examples=300)
@given(csv_texts(quotes=False).filter(lambda t: "\r" not in t.replace("\r\n", "")))
def test_files_without_quotes_split_as_the_csv_module_reads_them(text: str) -> None:
    text = text.removeprefix("\ufeff")
    assert _plain_outcome(text, quoted=False) == _plain_outcome(text, quoted=True)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("id,x\na\nb,2\n", "a short row"),
        ("id,x\na,1,2\n", "a long row"),
        ("id,x\na,1\n   \nb,2\n", "a line of blanks"),
        ("id\na\n  \nb\n", "a blank cell alone on its line"),
        ("id,id\na,b\n", "duplicate names"),
        ("id,\na,b\n", "an empty name"),
    ],
)
def test_the_plain_reader_declines_what_pandas_reads_its_own_way(
    tmp_path: Path, text: str, why: str
) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    assert read_plain_csv(path, ["id"]) is None, why


@given(st.binary(max_size=12).map(lambda b: bytes(b'\ra\n"'[x % 4] for x in b)), st.integers(1, 5))
def test_lone_carriage_returns_and_quotes_are_found_across_block_boundaries(
    data: bytes, block: int
) -> None:
    from pec.tables import _scan_bytes

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_bytes(data)
        scan = _scan_bytes(path, block)
        assert scan.lone_cr == (re.search(b"\r(?!\n)", data) is not None)
        if not scan.lone_cr:
            assert scan.quoted == (b'"' in data)


def test_the_plain_reader_leaves_lone_carriage_returns_to_pandas(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"id,x\rk1,1\rk2,2\r")  # old Mac line ends
    assert read_plain_csv(path, ["id"]) is None
    path.write_bytes(b"id,x\r\nk1,1\r\nk2,2\r\n")
    assert read_plain_csv(path, ["id"]) == {"id": ["k1", "k2"]}


def test_the_plain_reader_declines_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"id\n\xff\xfe\n")
    assert read_plain_csv(path, ["id"]) is None


@given(st.lists(st.tuples(CELL, CELL), max_size=30))
def test_raw_keys_prepared_without_pandas_match_the_pandas_path(
    rows: list[tuple[str, str]],
) -> None:
    first = [a for a, _ in rows]
    second = [b for _, b in rows]
    mine, my_reports = prepare_raw_input([("a", first), ("b", second)])
    series = [
        pd.Series(first, name="a", dtype="string"),
        pd.Series(second, name="b", dtype="string"),
    ]
    theirs, their_reports = prepare_input(series, [KeyKind.RAW] * 2, NormalizationRules())
    assert mine.slot_values == theirs.slot_values
    assert np.array_equal(mine.row_codes, theirs.row_codes)
    assert mine.row_codes.shape == (len(rows), 2)
    assert my_reports == their_reports


def test_a_table_that_lost_rows_since_it_was_read_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id\nk1\nk2\n")
    with pytest.raises(InputError, match="rows are missing"):
        write_plain_rows(path, [0, 2], tmp_path / "out.csv")
    path.write_text("id,x\nk1,1\nk2\n")
    with pytest.raises(InputError, match="changed while the run"):
        write_plain_rows(path, [1], tmp_path / "out.csv")


def test_alignment_ids_are_written_by_the_pandas_writer(tmp_path: Path) -> None:
    from pec.psi_local import _PartyJob, _write_output
    from psi.protocol import PsiConfig

    path = tmp_path / "t.csv"
    path.write_text('id,name\nk1,"Ann, A."\nk2,Bob\n')
    config = PsiConfig(run_id="r", reveal=Reveal.BOTH, kinds=("raw",), rules="x", align=True)
    job = _PartyJob(
        Role.LEFT, path, ("id",), (), config, NormalizationRules(), (KeyKind.RAW,),
        tmp_path, 1, 60.0,
    )  # fmt: skip
    result = PsiResult(
        Role.LEFT, Reveal.BOTH, 2, np.array([1]), None, None, match_ids={1: b"\xab\x01"}
    )
    assert _write_output(job, result, tmp_path / "out.csv", plain=True) == 1
    assert (tmp_path / "out.csv").read_text() == "id,name,pec_match_id\nk2,Bob,ab01\n"


def test_a_party_with_raw_keys_in_a_regular_csv_never_imports_pandas(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,name\nk1,Ann\nk2,Bob\n,Cy\n")
    script = f"""
import sys
from pathlib import Path
import numpy as np
from pec.psi_local import _PartyJob, _read_input, _write_output
from psi.normalize import KeyKind, NormalizationRules
from psi.protocol import PsiConfig, PsiResult, Reveal
from psi.wire import Role

config = PsiConfig(run_id="r", reveal=Reveal.LEFT, kinds=("raw",), rules="x")
job = _PartyJob(Role.LEFT, Path({str(tmp_path / "t.csv")!r}), ("id",), (), config,
                NormalizationRules(), (KeyKind.RAW,), Path({str(tmp_path)!r}), 1, 60.0)
data, reports, plain = _read_input(job, lambda name: None)
result = PsiResult(Role.LEFT, Reveal.LEFT, data.rows, np.array([1]), None, None)
_write_output(job, result, Path({str(tmp_path / "out.csv")!r}), plain)
print(plain, reports[0].invalid, list(reports[0].examples), "pandas" in sys.modules)
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.split() == ["True", "1", "[3]", "False"]
    assert (tmp_path / "out.csv").read_text() == "id,name\nk2,Bob\n"


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts with a BOM; the header check and both readers must agree on "id"
    path = tmp_path / "excel.csv"
    path.write_bytes("id,name\nk1,Ann\nk2,Bob\n".encode("utf-8-sig"))
    assert inspect_table(path).columns == ["id", "name"]
    assert read_plain_csv(path, ["id"]) == {"id": ["k1", "k2"]}
    assert read_columns(path, ["id"])["id"].tolist() == ["k1", "k2"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("id,x\nu1,a,\nu2,b,\n", 2),  # pandas alone would take u1 as a row label, x as id
        ("id,x\nu1,a\nu2,b,c\n", 3),
        ('id,x\n"u\n1",a\nu2,b,c\n', 4),  # the file's lines, not pandas' records
    ],
)
def test_a_row_longer_than_the_header_is_refused_by_both_pandas_readers(
    tmp_path: Path, text: str, line: int
) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    want = f"file {path}: cannot read as CSV (line {line} has 3 fields, the header 2)"
    with pytest.raises(InputError) as read:
        read_columns(path, ["id"])
    with pytest.raises(InputError) as streamed:
        list(iter_table(path))
    assert str(read.value) == str(streamed.value) == want
