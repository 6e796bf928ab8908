"""Cutting a job's tables to a consent cohort: the rows kept, the rows left out, the record."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from ledger_helpers import event

from consent.cut import cut_tables
from consent.errors import ConsentInputError
from consent.ledger import ConsentLedger

pytestmark = pytest.mark.unit


def _table(path: Path, subjects: list[str]) -> Path:
    frame = pd.DataFrame(
        {"lead_id": subjects, "phone": [f"1380000{i:04d}" for i in range(len(subjects))]}
    )
    frame.to_csv(path, index=False)
    return path


def test_only_consented_subjects_are_kept_in_every_table(
    sqlite_ledger: ConsentLedger, tmp_path: Path
) -> None:
    sqlite_ledger.record(
        [
            event(1, "s-ann", recipient="ins-co"),
            event(2, "s-bob", recipient="ins-co", action="refuse"),
            event(3, "s-cat", recipient="other-co"),
            event(4, "s-dan", recipient="ins-co"),
            event(5, "s-dan", recipient="ins-co", action="withdraw",
                  occurred_at="2026-02-01T00:00:00+08:00"),
            event(6, "s-eve", recipient="ins-co"),
        ]
    )  # fmt: skip
    leads = _table(tmp_path / "leads.csv", ["s-ann", "s-bob", "s-cat", "s-dan", "", "s-xxx"])
    new = _table(tmp_path / "new.csv", ["s-eve", "s-ann", "s-zed"])
    cut = cut_tables(sqlite_ledger, "marketing.lead_scoring", "ins-co",
                     [(leads, tmp_path / "out" / "leads.csv"),
                      (new, tmp_path / "out" / "new.csv")], "lead_id")  # fmt: skip
    kept = pd.read_csv(tmp_path / "out" / "leads.csv", dtype=str)
    assert kept["lead_id"].tolist() == ["s-ann"]
    assert list(kept.columns) == ["lead_id", "phone"]
    assert pd.read_csv(tmp_path / "out" / "new.csv", dtype=str)["lead_id"].tolist() == [
        "s-eve",
        "s-ann",
    ]
    summary = cut.summary()
    assert summary["tables"]["leads.csv"] == {"rows": 6, "kept": 1, "without_consent": 5}
    assert summary["tables"]["new.csv"] == {"rows": 3, "kept": 2, "without_consent": 1}
    assert summary["eligible"] == 2
    assert summary["excluded"]["refused"] == 1
    assert summary["excluded"]["withdrawn"] == 1
    assert summary["excluded"]["other_recipient"] == 1
    assert summary["tree_head"]["tree_size"] == 6
    text = json.dumps(summary)
    assert not any(s in text for s in ("s-ann", "s-bob", "s-cat", "s-dan", "s-eve", "s-xxx"))


def test_a_table_without_the_subject_column_is_an_error_and_leaves_nothing(
    sqlite_ledger: ConsentLedger, tmp_path: Path
) -> None:
    sqlite_ledger.record([event(1, "s-ann", recipient="ins-co")])
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"phone": ["1"]}).to_csv(bad, index=False)
    with pytest.raises(ConsentInputError, match="no subject column 'lead_id'"):
        cut_tables(sqlite_ledger, "marketing.lead_scoring", "ins-co",
                   [(bad, tmp_path / "out" / "bad.csv")], "lead_id")  # fmt: skip
    assert not any((tmp_path / "out").iterdir())
