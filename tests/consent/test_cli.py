"""The ``pec consent`` commands as a user runs them (files in, files and exit codes out)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ledger_helpers import event
from typer.testing import CliRunner

from consent.keys import LedgerKeys, load_public_key
from consent.ledger import verify_document
from pec.cli import app

pytestmark = pytest.mark.e2e

FIELDS = list(event(0).keys())


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PEC_HOME", str(tmp_path / "home"))
    return CliRunner()


def test_import_verify_cohort_history_receipt(runner: CliRunner, tmp_path: Path) -> None:
    rows = [event(i, subject=f"s{i}", recipient="ins-co") for i in range(20)]
    rows.append(
        event(
            99,
            subject="s3",
            recipient="ins-co",
            action="withdraw",
            occurred_at="2026-02-01T00:00:00Z",
        )
    )
    src = _write_csv(tmp_path / "events.csv", rows)

    first = runner.invoke(app, ["consent", "import", str(src)])
    again = runner.invoke(app, ["consent", "import", str(src)])
    verified = runner.invoke(app, ["consent", "verify", "--json"])
    out = tmp_path / "cohort.csv"
    cut = runner.invoke(
        app,
        [
            "consent",
            "cohort",
            "--purpose",
            "marketing.lead_scoring",
            "--recipient",
            "ins-co",
            "--at",
            "2026-03-01T00:00:00Z",
            "--out",
            str(out),
        ],
    )
    hist = runner.invoke(app, ["consent", "history", "s3"])
    rec = runner.invoke(app, ["consent", "receipt", "s3"])

    assert first.exit_code == 0, first.output
    assert "imported 21 events, skipped 0" in first.output
    assert "imported 0 events, skipped 21" in again.output
    assert verified.exit_code == 0 and json.loads(verified.output)["ok"] is True
    assert cut.exit_code == 0, cut.output
    lines = out.read_text().splitlines()
    assert lines[0] == "subject_key" and len(lines) == 1 + 19
    receipt = json.loads((tmp_path / "cohort.receipt.json").read_text())
    assert receipt["eligible"] == 19 and receipt["excluded"]["withdrawn"] == 1
    assert receipt["tree_head"]["tree_size"] == 21
    keys = LedgerKeys.load_or_create(tmp_path / "home")
    assert verify_document(receipt, keys.public_key)
    assert [h["action"] for h in json.loads(hist.output)] == ["grant", "withdraw"]
    assert verify_document(json.loads(rec.output), keys.public_key)
    assert "s3" not in hist.output.replace('"seq"', "")


def test_bad_row_rejects_file_and_names_row_and_field(runner: CliRunner, tmp_path: Path) -> None:
    rows = [event(i, subject=f"s{i}") for i in range(5)]
    rows[2]["occurred_at"] = "not a time"
    src = _write_jsonl(tmp_path / "events.jsonl", rows)

    bad = runner.invoke(app, ["consent", "import", str(src)])
    verified = runner.invoke(app, ["consent", "verify", "--json"])

    assert bad.exit_code == 2
    assert "events.jsonl, row 3, field 'occurred_at'" in bad.output
    assert json.loads(verified.output)["entries_checked"] == 0


def test_verify_exits_non_zero_naming_the_bad_entry(runner: CliRunner, tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "e.csv", [event(i, subject=f"s{i}") for i in range(8)])
    runner.invoke(app, ["consent", "import", str(src)])
    import sqlite3

    db = sqlite3.connect(tmp_path / "home" / "consent.sqlite3")
    db.execute("UPDATE consent_entries SET recipient = 'media-co' WHERE seq = 6")
    db.commit()
    db.close()

    result = runner.invoke(app, ["consent", "verify"])

    assert result.exit_code == 1
    assert "entry 6" in result.output


def test_verify_with_an_auditors_public_key(runner: CliRunner, tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "e.csv", [event(1)])
    runner.invoke(app, ["consent", "import", str(src)])
    pem = tmp_path / "home" / "keys" / "consent_ed25519.pub.pem"
    other = tmp_path / "other.pem"
    other.write_bytes(LedgerKeys.generate().public_pem())
    load_public_key(pem.read_bytes())

    ok = runner.invoke(app, ["consent", "verify", "--public-key", str(pem)])
    wrong = runner.invoke(app, ["consent", "verify", "--public-key", str(other)])

    assert ok.exit_code == 0 and wrong.exit_code == 1


def _import_proc(home: Path, src: Path, db: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PEC_HOME": str(home)}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pec.cli import main; main()",
            "consent",
            "import",
            str(src),
            "--db",
            db,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    return proc.returncode, (out + err).decode()


@pytest.mark.integration
def test_two_processes_appending_at_once_make_one_log(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    LedgerKeys.load_or_create(home)
    shared = [event(f"shared-{i}", subject=f"x{i}") for i in range(300)]
    a = _write_csv(
        tmp_path / "a.csv", [event(f"a-{i}", subject=f"a{i}") for i in range(1500)] + shared
    )
    b = _write_csv(
        tmp_path / "b.csv", shared + [event(f"b-{i}", subject=f"b{i}") for i in range(1500)]
    )
    from consent.storage import SqlLedgerStore

    SqlLedgerStore.open(db_url).close()  # schema first, as a deployment would

    procs = [_import_proc(home, a, db_url), _import_proc(home, b, db_url)]
    results = [_wait(p, 180) for p in procs]

    assert all(code == 0 for code, _ in results), results
    from consent.ledger import ConsentLedger

    ledger = ConsentLedger(SqlLedgerStore.open(db_url), LedgerKeys.load_or_create(home))
    try:
        report = ledger.verify()
        assert report.ok, report.to_dict()
        assert report.entries_checked == 3300
        assert report.tree_heads_checked == 2
    finally:
        ledger.close()


N_BIG = 120_000  # about 16 MB: above WORKER_MIN_BYTES, so the parser runs in its own process


@pytest.mark.integration
def test_kill_9_during_import_leaves_a_valid_ledger_and_reimport_completes(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    db = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    small = _write_csv(
        tmp_path / "small.csv", [event(f"pre-{i}", subject=f"p{i}") for i in range(50)]
    )
    big = _write_csv(tmp_path / "big.csv", [event(i, subject=f"s{i}") for i in range(N_BIG)])
    assert _wait(_import_proc(home, small, db), 60)[0] == 0

    proc = _import_proc(home, big, db)
    # Kill once the import's transaction is open (SQLite keeps a journal beside the file) and
    # has run a little: inside the import, which takes seconds more (a fixed CPU budget was
    # once enough, until a faster machine committed all of it within the budget).
    journals = [tmp_path / "ledger.sqlite3-journal", tmp_path / "ledger.sqlite3-wal"]
    deadline = time.monotonic() + 60
    while (
        proc.poll() is None
        and not any(j.exists() for j in journals)
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    time.sleep(0.3)
    still_running = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)

    from consent.ledger import ConsentLedger
    from consent.storage import SqlLedgerStore

    ledger = ConsentLedger(SqlLedgerStore.open(db), LedgerKeys.load_or_create(home))
    try:
        report = ledger.verify()
        assert still_running, "the import finished before the kill; make the file larger"
        assert report.ok and report.entries_checked == 50, report.to_dict()
        code, output = _wait(_import_proc(home, big, db), 240)
        assert code == 0, output
        assert f"imported {N_BIG} events, skipped 0" in output
        code, output = _wait(_import_proc(home, big, db), 240)
        assert f"imported 0 events, skipped {N_BIG}" in output
        assert ledger.verify().entries_checked == N_BIG + 50
    finally:
        ledger.close()


@pytest.mark.integration
@pytest.mark.parametrize("bad_row", [None, 2_500, 11_000])
def test_parser_process_yields_what_the_in_process_parser_yields(
    tmp_path: Path, bad_row: int | None
) -> None:
    from consent.errors import ConsentInputError
    from consent.io import iter_draft_batches
    from consent.model import SubjectKeyer

    rows = [event(i, subject=f"s{i}") for i in range(12_000)]
    if bad_row is not None:
        rows[bad_row - 1]["occurred_at"] = "yesterday"
    src = _write_csv(tmp_path / "events.csv", rows)
    keyer = SubjectKeyer(b"k" * 32)

    def run(worker: bool) -> tuple[list[list[tuple[object, ...]]], str | None]:
        got: list[list[tuple[object, ...]]] = []
        try:
            for batch in iter_draft_batches(src, keyer, worker=worker):
                got.append(batch)
        except ConsentInputError as exc:
            return got, str(exc)
        return got, None

    inline, inline_error = run(False)
    piped, piped_error = run(True)

    assert piped == inline
    assert piped_error == inline_error
    if bad_row is not None:
        assert (
            piped_error
            == f"events.csv, row {bad_row}, field 'occurred_at': is not an ISO 8601 timestamp"
        )
