"""Cutting tables down to a consent cohort: what a job may use, and how many rows it may not.

A job never reads a raw table: it reads the rows whose subject is in the cohort snapshot for the
job's (purpose, recipient), cut once and applied to every table of the job (for example the
brand's historical leads and its new leads). Rows without a subject, or whose subject is not in
the cohort, are left out and counted; the counts and the snapshot's signed tree head go into the
job's record so an auditor can re-derive the cohort from the ledger.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from consent.errors import ConsentInputError
from consent.ledger import CohortSnapshot, ConsentLedger
from pec.tables import iter_table

__all__ = ["ConsentedTables", "cut_tables"]


@dataclass(frozen=True)
class ConsentedTables:
    """The snapshot a job's inputs were cut with, and per table the rows kept and left out."""

    snapshot: CohortSnapshot
    rows: dict[str, int]
    kept: dict[str, int]

    def summary(self) -> dict[str, Any]:
        """The JSON record: snapshot (with its tree head) and per-table counts, no subjects."""
        body = self.snapshot.body()
        body.pop("type")
        body["tables"] = {
            name: {
                "rows": self.rows[name],
                "kept": self.kept[name],
                "without_consent": self.rows[name] - self.kept[name],
            }
            for name in self.rows
        }
        return body


def cut_tables(
    ledger: ConsentLedger,
    purpose: str,
    recipient: str,
    tables: Sequence[tuple[Path, Path]],
    subject_column: str,
    *,
    at: datetime | None = None,
) -> ConsentedTables:
    """Write, for each ``(source, dest)``, the rows of ``source`` whose subject is in the cohort.

    The cohort is cut once, for all tables. Each ``dest`` is a CSV with the source's header and
    its consented rows in their original order, written beside and moved into place only when
    complete.

    Raises:
        ConsentInputError: a table has no ``subject_column`` (naming the file and column).
        PecError: the ledger refuses the query, or a table is unreadable.
    """
    keys: set[str] = set()
    snapshot = ledger.cohort(purpose, recipient, at=at, sink=keys.add)
    rows: dict[str, int] = {}
    kept: dict[str, int] = {}
    for source, dest in tables:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.partial")
        total = taken = 0
        try:
            with partial.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                header_written = False
                for chunk in iter_table(source):
                    if subject_column not in chunk.columns:
                        raise ConsentInputError(f"{source}: no subject column {subject_column!r}")
                    if not header_written:
                        writer.writerow(list(chunk.columns))
                        header_written = True
                    subjects = chunk[subject_column].fillna("").astype(str).str.strip()
                    mask = [bool(s) and ledger.subject_key(s) in keys for s in subjects]
                    total += len(mask)
                    taken += sum(mask)
                    writer.writerows(chunk[mask].itertuples(index=False, name=None))
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        rows[source.name] = total
        kept[source.name] = taken
    return ConsentedTables(snapshot=snapshot, rows=rows, kept=kept)
