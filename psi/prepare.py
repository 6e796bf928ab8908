"""Turn a party's key columns into the protocol's input: distinct values and row codes.

This runs inside the party and never sends anything: it normalizes each key column, reports the
invalid cells by count and row number, and factorizes the valid values so that duplicates are
masked (and revealed) once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from psi.normalize import MAX_EXAMPLES, KeyKind, NormalizationRules, normalize_column
from psi.protocol import PartyInput

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KeyReport", "prepare_input", "prepare_raw_input"]


@dataclass(frozen=True)
class KeyReport:
    """Per key column: how many cells were invalid or empty, and a few example rows."""

    column: str
    kind: KeyKind
    invalid: int
    examples: tuple[int, ...]


def prepare_input(
    keys: Sequence[pd.Series],
    kinds: Sequence[KeyKind],
    rules: NormalizationRules,
    *,
    payload: pd.DataFrame | None = None,
) -> tuple[PartyInput, list[KeyReport]]:
    """Normalize and factorize the key columns (one Series per key slot, aligned by row).

    With ``payload`` (labeled PSI, the side that attaches data), each distinct key value carries
    the JSON list of the payload rows that have it.
    """
    import pandas as pd

    slot_values: list[tuple[bytes, ...]] = []
    codes: list[np.ndarray] = []
    reports: list[KeyReport] = []
    payloads: list[tuple[bytes, ...]] = []
    for series, kind in zip(keys, kinds, strict=True):
        normalized = normalize_column(series, kind, rules)
        slot_codes, uniques = pd.factorize(normalized.values, use_na_sentinel=True)
        slot_values.append(tuple(str(u).encode() for u in uniques))
        codes.append(np.asarray(slot_codes, dtype=np.int64))
        reports.append(
            KeyReport(str(series.name), kind, normalized.invalid_count, normalized.invalid_examples)
        )
        if payload is not None:
            payloads.append(_group_payloads(payload, np.asarray(slot_codes), len(uniques)))
    row_codes = np.stack(codes, axis=1) if codes else np.zeros((0, 0), dtype=np.int64)
    data = PartyInput(
        slot_values=tuple(slot_values),
        row_codes=row_codes,
        payloads=tuple(payloads) if payload is not None else None,
        payload_columns=tuple(str(c) for c in payload.columns) if payload is not None else (),
    )
    return data, reports


def prepare_raw_input(
    columns: Sequence[tuple[str, Sequence[str]]],
) -> tuple[PartyInput, list[KeyReport]]:
    """:func:`prepare_input` for raw keys given as lists of cells, without pandas.

    ``columns`` holds one ``(name, cells)`` per key slot, aligned by row. The same result as
    :func:`prepare_input` with every kind raw (tested): a value is used as it is, an empty or
    all-whitespace cell is invalid, and distinct values are numbered in order of first appearance.
    """
    slot_values: list[tuple[bytes, ...]] = []
    codes: list[np.ndarray] = []
    reports: list[KeyReport] = []
    for name, cells in columns:
        index: dict[str, int] = {}
        slot_codes = np.fromiter(
            (index.setdefault(c, len(index)) if c.strip() else -1 for c in cells),
            dtype=np.int64,
            count=len(cells),
        )
        slot_values.append(tuple(v.encode() for v in index))
        codes.append(slot_codes)
        empty = np.flatnonzero(slot_codes < 0)
        examples = tuple(int(p) + 1 for p in empty[:MAX_EXAMPLES])
        reports.append(KeyReport(name, KeyKind.RAW, int(empty.size), examples))
    row_codes = np.stack(codes, axis=1) if codes else np.zeros((0, 0), dtype=np.int64)
    return PartyInput(slot_values=tuple(slot_values), row_codes=row_codes), reports


def _group_payloads(payload: pd.DataFrame, codes: np.ndarray, n: int) -> tuple[bytes, ...]:
    groups: list[list[list[str]]] = [[] for _ in range(n)]
    rows = payload.astype(str).to_numpy().tolist()
    for row, code in zip(rows, codes, strict=True):
        if code >= 0 and row not in groups[code]:
            groups[code].append(row)
    return tuple(
        json.dumps(group, ensure_ascii=False, separators=(",", ":")).encode() for group in groups
    )
