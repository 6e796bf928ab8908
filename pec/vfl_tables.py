"""Reading a party's table for a VFL job: identifiers, numeric features and 0/1 labels.

Errors say what is wrong and where (file, column, and the first bad row as the data row
number, 1 = the first row after the header), never the cell's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from federated.job import PartyTable
from pec.errors import InputError
from pec.tables import inspect_table, read_columns
from psi.normalize import KeyKind, NormalizationRules, normalize_column

__all__ = ["load_party_table"]

_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


def _first_bad(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0]) + 1


def load_party_table(
    path: Path,
    id_column: str,
    *,
    role: str,
    labels: Sequence[str] = (),
    features: Sequence[str] | None = None,
    require_labels: bool = True,
    id_kind: str = "raw",
) -> PartyTable:
    """Read ``path`` into a :class:`PartyTable`; features default to every other column.

    With ``require_labels=False`` (a brand's test table), labels that are missing are skipped.

    Raises:
        InputError: missing file or column, empty table, duplicate or empty ids, a feature that
            is not numeric, a label that is not binary.
    """
    info = inspect_table(path, role=role)
    if not info.has_rows:
        raise InputError(f"{role} file {path}: the table has no rows")
    present = [c for c in labels if c in info.columns]
    info.require([id_column, *(labels if require_labels else [])], role=role)
    names = (
        list(features)
        if features is not None
        else [c for c in info.columns if c != id_column and c not in labels]
    )
    info.require(names, role=role)
    if not names:
        raise InputError(f"{role} file {path}: no feature columns besides {id_column!r}")
    table = read_columns(path, list(dict.fromkeys([id_column, *present, *names])))
    # an empty or invalid id is not an error: that row cannot be aligned, so it never matches
    # (the alignment PSI counts it as invalid), exactly as in `pec psi local`
    ids = table[id_column].astype(str).str.strip()
    if id_kind not in ("raw", "phone", "email"):
        raise InputError(f"unknown id kind {id_kind!r} (raw, phone or email)")
    # two rows with one person's id would make the alignment ambiguous; ids that cannot match
    # (empty, or not a valid phone or email) never align, so repeating them is harmless
    keys = normalize_column(ids, KeyKind(id_kind), NormalizationRules()).values
    duplicated = keys.duplicated() & keys.notna()
    if duplicated.any():
        row = _first_bad(duplicated)
        raise InputError(f"{role} file {path}, row {row}, column {id_column!r}: duplicate id")
    matrix = np.empty((len(table), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        values = pd.to_numeric(table[name].str.strip(), errors="coerce")
        bad = values.isna() | ~np.isfinite(values.fillna(0))
        if bad.any():
            raise InputError(
                f"{role} file {path}, row {_first_bad(bad)}, column {name!r}: "
                "not a number (features must be numeric)"
            )
        matrix[:, j] = values.to_numpy(np.float64)
    label_values: dict[str, np.ndarray] = {}
    for name in present:
        text = table[name].astype(str).str.strip().str.lower()
        ones, zeros = text.isin(_TRUE), text.isin(_FALSE)
        if not (ones | zeros).all():
            raise InputError(
                f"{role} file {path}, row {_first_bad(~(ones | zeros))}, column {name!r}: "
                "the label must be binary (0/1)"
            )
        label_values[name] = ones.to_numpy(np.float64)
    return PartyTable(
        ids.reset_index(drop=True), matrix, tuple(names), label_values, id_kind=id_kind
    )
