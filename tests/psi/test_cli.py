"""``pec psi local`` end to end: two party processes, files in, files out."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e

LEFT = """id,phone,email,name
1,13812345678,a@x.com,Ann
2,+86 139-0000-0000,B@X.com ,Bob
3,,c@x.com,Cy
4,bad,d@x.com,Di
5,00123,,Ed
"""
RIGHT = """mobile,email,tag
138 1234 5678,z@x.com,t1
13700000000,c@x.com,t2
0086 13900000000,q@x.com,t3
"""


def pec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pec", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "left.csv").write_text(LEFT)
    (tmp_path / "right.csv").write_text(RIGHT)
    return tmp_path


def test_reveal_left_writes_matched_rows_with_all_columns(files: Path) -> None:
    result = pec(
        "psi",
        "local",
        "left.csv",
        "right.csv",
        "--key",
        "phone=mobile:phone",
        "--key",
        "email",
        "--reveal",
        "left",
        "--out",
        "out",
        "--json",
        cwd=files,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["left_rows"] == 5 and summary["right_rows"] == 3
    assert summary["intersection"] == 3
    assert summary["per_key"] == {"phone": 2, "email": 1}
    assert summary["left_invalid"] == {"phone": 3, "email": 1}
    assert summary["left_invalid_examples"]["phone"] == [3, 4, 5]
    assert summary["outputs"] == ["left.csv"]
    assert summary["seconds"] > 0
    assert json.loads((files / "out" / "summary.json").read_text()) == summary
    matched = pd.read_csv(files / "out" / "left.csv", dtype=str, keep_default_na=False)
    assert matched.columns.tolist() == ["id", "phone", "email", "name"]
    assert matched["id"].tolist() == ["1", "2", "3"]
    assert matched["email"].tolist() == ["a@x.com", "B@X.com ", "c@x.com"]  # as written
    assert not (files / "out" / "right.csv").exists()


def test_both_sides_with_parquet_and_different_column_names(files: Path) -> None:
    pd.read_csv(files / "right.csv", dtype=str).to_parquet(files / "right.parquet")
    result = pec(
        "psi",
        "local",
        "left.csv",
        "right.parquet",
        "--key",
        "phone=mobile",
        "--reveal",
        "both",
        "--out",
        "out",
        "--json",
        cwd=files,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["keys"] == [{"left": "phone", "right": "mobile", "kind": "phone"}]
    assert summary["matched_left_rows"] == 2 and summary["matched_right_rows"] == 2
    right = pd.read_csv(files / "out" / "right.csv", dtype=str)
    assert right["tag"].tolist() == ["t1", "t3"]


def test_parquet_integer_keys_with_a_missing_value_match_as_integers(files: Path) -> None:
    # pandas would read this column as floats (13812345678.0): no phone, no raw match
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pa.array([13812345678, None, 13900000000, 13700000001], pa.int64())
    pq.write_table(pa.table({"mobile": ids, "n": pa.array([1, 2, None, 4])}), files / "r.parquet")
    (files / "raw.csv").write_text("mobile\n13812345678\n13900000000\n")
    for key, matched in (("phone=mobile", 2), ("mobile:raw", 2)):
        left = "left.csv" if key.startswith("phone") else "raw.csv"
        result = pec(
            "psi", "local", left, "r.parquet", "--key", key, "--reveal", "both", "--out",
            "out", "--json", cwd=files,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["matched_right_rows"] == matched, key
        assert summary["right_invalid"] == {"mobile": 1}, key  # the missing one, reported
        right = pd.read_csv(files / "out" / "right.csv", dtype=str, keep_default_na=False)
        assert right.values.tolist() == [["13812345678", "1"], ["13900000000", ""]], key


def test_align_adds_a_shared_match_id(files: Path) -> None:
    result = pec(
        "psi",
        "local",
        "left.csv",
        "right.csv",
        "--key",
        "phone=mobile",
        "--key",
        "email",
        "--reveal",
        "both",
        "--align",
        "--out",
        "out",
        cwd=files,
    )
    assert result.returncode == 0, result.stderr
    left = pd.read_csv(files / "out" / "left.csv", dtype=str, keep_default_na=False)
    right = pd.read_csv(files / "out" / "right.csv", dtype=str, keep_default_na=False)
    joined = left.merge(right, on="pec_match_id")
    assert sorted(zip(joined["id"], joined["tag"], strict=True)) == [
        ("1", "t1"), ("2", "t3"), ("3", "t2"),
    ]  # fmt: skip
    refused = pec(
        "psi",
        "local",
        "left.csv",
        "right.csv",
        "--key",
        "phone=mobile",
        "--reveal",
        "left",
        "--align",
        "--out",
        "out2",
        cwd=files,
    )
    assert refused.returncode == 2 and "--align needs --reveal both" in refused.stderr


def test_count_mode_reveals_no_rows_and_clears_stale_outputs(files: Path) -> None:
    (files / "out").mkdir()
    (files / "out" / "left.csv").write_text("stale\n")
    result = pec(
        "psi",
        "local",
        "left.csv",
        "right.csv",
        "--key",
        "phone=mobile",
        "--key",
        "email",
        "--reveal",
        "count",
        "--out",
        "out",
        "--json",
        cwd=files,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["intersection"] == 3
    assert summary["matched_left_rows"] is None
    assert sorted(p.name for p in (files / "out").iterdir()) == ["summary.json"]


def test_labeled_psi_attaches_payload_columns(files: Path) -> None:
    result = pec(
        "psi",
        "local",
        "left.csv",
        "right.csv",
        "--key",
        "phone=mobile",
        "--key",
        "email",
        "--reveal",
        "left",
        "--payload",
        "tag",
        "--payload",
        "email",
        "--out",
        "out",
        cwd=files,
    )
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(files / "out" / "left.csv", dtype=str, keep_default_na=False)
    assert rows.columns.tolist() == ["id", "phone", "email", "name", "tag", "email_right"]
    assert rows[["id", "tag"]].values.tolist() == [["1", "t1"], ["2", "t3"], ["3", "t2"]]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["left.csv", "missing.csv", "--key", "phone"], "right file missing.csv: not found"),
        # printed as it is, not as rich markup
        (
            ["b[bold]x[/].csv", "right.csv", "--key", "phone"],
            "left file b[bold]x[/].csv: not found",
        ),
        (["left.csv", "right.csv", "--key", "phone"], "right file right.csv: no column 'phone'"),
        (["left.csv", "right.csv", "--key", "fone=mobile"], "left file left.csv: no column 'fone'"),
        (
            ["left.csv", "right.csv", "--key", "phone=mobile:fax"],
            "--key 'phone=mobile:fax': unknown key kind 'fax': use one of phone, email, raw "
            "(for column 'phone')",
        ),
        (["left.csv", "right.csv", "--key", "phone=mobile:"], "no kind after ':'"),
        (["left.csv", "right.csv", "--key", "phone="], "--key 'phone=': a column name is empty"),
        # the body is read in the party processes: still exit 2, naming the file and line
        (
            ["ragged.csv", "right.csv", "--key", "phone=mobile"],
            "left file ragged.csv: cannot read as CSV (line 4 has 3 fields, the header 2)",
        ),
        (
            ["ragged.csv", "right.csv", "--key", "phone=mobile:raw"],  # the csv-module reader
            "left file ragged.csv: cannot read as CSV (line 4 has 3 fields, the header 2)",
        ),
        # a trailing comma on the first data row: pandas would shift every column by one
        (
            ["trailing.csv", "right.csv", "--key", "phone=mobile"],
            "left file trailing.csv: cannot read as CSV (line 2 has 3 fields, the header 2)",
        ),
        (
            ["trailing.csv", "right.csv", "--key", "phone=mobile:raw"],
            "left file trailing.csv: cannot read as CSV (line 2 has 3 fields, the header 2)",
        ),
        # lines as the file has them, past a quoted field that spans two
        (
            ["quoted.csv", "right.csv", "--key", "phone=mobile"],
            "left file quoted.csv: cannot read as CSV (line 4 has 3 fields, the header 2)",
        ),
        (["a  b.csv", "right.csv", "--key", "phone"], "left file a  b.csv: not found"),
        (
            ["left.csv", "latin1.csv", "--key", "phone=mobile"],
            "right file latin1.csv: line 702 is not UTF-8 (byte 4 of the line)",
        ),
        (["empty.csv", "right.csv", "--key", "phone=mobile"], "left file empty.csv: has no rows"),
        (["garbage.parquet", "right.csv", "--key", "x"], "cannot read as PARQUET"),
        (["a-folder", "right.csv", "--key", "x"], "left file a-folder: is a directory"),
        # pandas would rename the second 'phone' to 'phone.1', in the key and in the output
        (
            ["dup.csv", "right.csv", "--key", "phone=mobile"],
            "left file dup.csv: column name 'phone' appears twice (columns 1 and 3)",
        ),
        # without a header row: the repeated "name" is an identifier, and is not printed
        (
            ["left.csv", "dupids.csv", "--key", "phone=mobile"],
            "right file dupids.csv: column name appears twice (columns 1 and 2)",
        ),
        (
            ["left.csv", "right.csv", "--key", "phone=mobile", "--payload", "nope"],
            "right file right.csv: no column 'nope'",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    files: Path, args: list[str], needle: str
) -> None:
    (files / "empty.csv").write_text("phone,x\n")
    (files / "a-folder").mkdir()
    (files / "dup.csv").write_text("phone,x,phone\n13812345678,a,13900000000\n")
    (files / "dupids.csv").write_text("13812345678,13812345678\n13900000000,1\n")
    (files / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    (files / "ragged.csv").write_text("phone,x\n13812345678,a\n13900000000,b\n13700000000,c,d\n")
    (files / "trailing.csv").write_text("phone,x\n13812345678,a,\n13900000000,b,\n")
    (files / "quoted.csv").write_text('phone,x\n"1381234\n5678",a\n13900000000,b,c\n')
    rows = b"".join(b"1380000%04d\n" % i for i in range(700))
    (files / "latin1.csv").write_bytes(b"mobile\n" + rows + b"Caf\xe9\n")  # past the first 8 KB
    result = pec("psi", "local", *args, "--reveal", "left", "--out", "out", cwd=files)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert not (files / "out").exists()
    assert not any(p.name.startswith(".out.partial") for p in files.iterdir())


def test_a_missing_column_error_never_shows_the_first_row(files: Path) -> None:
    # without a header row the "column names" are a person's identifiers
    (files / "headerless.csv").write_text("13812345678,secret.person@example.com\n1,a@b.c\n")
    result = pec(
        "psi", "local", "headerless.csv", "right.csv", "--key", "phone=mobile", "--reveal",
        "left", "--out", "out", cwd=files,
    )  # fmt: skip
    assert result.returncode == 2
    assert "left file headerless.csv: no column 'phone' among its 2 columns" in result.stderr
    assert "13812345678" not in result.stderr and "secret" not in result.stderr
    (files / "capitals.csv").write_text("Phone,x\n13812345678,a\n")
    result = pec(
        "psi", "local", "capitals.csv", "right.csv", "--key", "phone=mobile", "--reveal",
        "left", "--out", "out", cwd=files,
    )  # fmt: skip
    assert result.returncode == 2 and "did you mean 'Phone'?" in result.stderr
    # a name typed close to an identifier in the first row: that identifier is not suggested
    result = pec(
        "psi", "local", "headerless.csv", "right.csv", "--key", "1381234567=mobile", "--reveal",
        "left", "--out", "out", cwd=files,
    )  # fmt: skip
    assert result.returncode == 2 and "no column '1381234567'" in result.stderr
    assert "13812345678" not in result.stderr and "did you mean" not in result.stderr


def test_align_refuses_a_table_that_already_has_a_match_id(files: Path) -> None:
    (files / "ids.csv").write_text("phone,pec_match_id\n13812345678,mine\n")
    result = pec(
        "psi", "local", "ids.csv", "right.csv", "--key", "phone=mobile", "--reveal", "both",
        "--align", "--out", "out", cwd=files,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "left file ids.csv: already has a column 'pec_match_id', which --align adds" in (
        result.stderr
    )
    assert not (files / "out").exists()


def test_blank_raw_keys_are_invalid_and_never_match(files: Path) -> None:
    # all-whitespace ids on both sides; on the csv-module path and on the pandas path (Parquet)
    (files / "l.csv").write_text("uid,x\n  ,a\nk1,b\n\t,c\n,d\n")
    (files / "r.csv").write_text("uid,y\n  ,1\nk1,2\n\t,3\n")
    pd.read_csv(files / "r.csv", dtype=str, keep_default_na=False).to_parquet(files / "r.parquet")
    for right in ("r.csv", "r.parquet"):
        result = pec(
            "psi", "local", "l.csv", right, "--key", "uid", "--reveal", "both", "--out", "out",
            "--json", cwd=files,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.splitlines()[-1])
        assert summary["intersection"] == 1, right
        assert summary["left_invalid"] == {"uid": 3}
        assert summary["left_invalid_examples"] == {"uid": [1, 3, 4]}
        assert summary["right_invalid"] == {"uid": 2}
        assert (files / "out" / "left.csv").read_text() == "uid,x\nk1,b\n"


def test_rows_of_empty_cells_are_rows_with_invalid_keys(files: Path) -> None:
    (files / "blank.csv").write_text("email,phone\n,\n")
    result = pec(
        "psi", "local", "blank.csv", "right.csv", "--key", "email", "--key", "phone=mobile",
        "--reveal", "left", "--out", "out", "--json", cwd=files,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["left_rows"], summary["intersection"]) == (1, 0)
    assert summary["left_invalid"] == {"email": 1, "phone": 1}


def test_a_failed_run_removes_the_folders_it_made_for_out(files: Path) -> None:
    (files / "ragged.csv").write_text("phone,x\n13812345678,a\n13900000000,b,c\n")
    result = pec(
        "psi", "local", "ragged.csv", "right.csv", "--key", "phone=mobile", "--reveal", "left",
        "--out", "made/for/out", cwd=files,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "line 3 has 3 fields" in result.stderr  # found by the party, after --out was made
    assert not (files / "made").exists()


@pytest.mark.parametrize("out", ["a-file", "a-file/below"])
def test_an_unusable_out_exits_2_before_any_work(files: Path, out: str) -> None:
    (files / "a-file").write_text("keep me\n")
    result = pec(
        "psi", "local", "left.csv", "right.csv", "--key", "phone=mobile", "--reveal", "left",
        "--out", out, cwd=files,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--out {files / out}" in lines[0], result.stderr
    named = "" if out == "a-file" else f" {files / 'a-file'}"  # the file in the way
    assert f":{named} is a file, not a directory" in lines[0], result.stderr
    assert "mask" not in result.stderr  # no party ran
    assert (files / "a-file").read_text() == "keep me\n"
    assert sorted(p.name for p in files.iterdir()) == ["a-file", "left.csv", "right.csv"]


def test_outputs_that_cannot_be_moved_in_fail_in_one_line_without_a_summary(files: Path) -> None:
    (files / "out" / "left.csv").mkdir(parents=True)  # a folder where the output goes
    (files / "out" / "left.csv" / "x").write_text("x\n")
    result = pec(
        "psi", "local", "left.csv", "right.csv", "--key", "phone=mobile", "--reveal", "left",
        "--out", "out", cwd=files,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: --out {files / 'out'}: cannot move the outputs in ("), error
    assert not (files / "out" / "summary.json").exists()  # the run is not marked complete
    assert not any(p.name.startswith(".out.partial") for p in files.iterdir())


def test_payload_needs_reveal_left(files: Path) -> None:
    result = pec(
        "psi",
        "local",
        "left.csv",
        "right.csv",
        "--key",
        "phone=mobile",
        "--payload",
        "tag",
        "--reveal",
        "both",
        "--out",
        "out",
        cwd=files,
    )
    assert result.returncode == 2
    assert "--payload needs --reveal left" in result.stderr


def test_large_run_uses_worker_pools_and_small_chunks(tmp_path: Path) -> None:
    # above the pool threshold and the early-pool file size, with many chunks per side
    left_ids = [f"user-{i:07d}" for i in range(0, 44_000, 2)]
    right_ids = [f"user-{i:07d}" for i in range(0, 44_000, 3)]
    (tmp_path / "l.csv").write_text("uid,extra\n" + "".join(f"{u},x\n" for u in left_ids))
    (tmp_path / "r.csv").write_text("uid\n" + "\n".join(right_ids) + "\n")
    result = pec(
        "psi",
        "local",
        "l.csv",
        "r.csv",
        "--key",
        "uid:raw",
        "--reveal",
        "both",
        "--chunk-size",
        "5000",
        "--workers",
        "2",
        "--out",
        "out",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    expected = len(set(left_ids) & set(right_ids))
    assert summary["matched_left_rows"] == summary["matched_right_rows"] == expected
    assert summary["peak_rss_mb"]["left"]["largest_worker"] > 0  # the pool did the work
    matched = pd.read_csv(tmp_path / "out" / "left.csv", dtype=str)
    assert matched["uid"].tolist() == [u for u in left_ids if int(u[5:]) % 3 == 0]
