"""Reading a brand's seed for a lookalike job: identifiers and one 0/1 label, nothing else.

The seed contributes labels only (the model is on the partner's features), so no other column is
read. Errors say what is wrong and where (file, column, and the first bad row as the data row
number, 1 = the first row after the header), never the cell's value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from federated.job import PartyTable
from pec.errors import InputError
from pec.tables import inspect_table, read_columns
from psi.normalize import KeyKind, NormalizationRules, normalize_column

__all__ = ["load_seed_table"]

_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


def _first_bad(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0]) + 1


def load_seed_table(
    path: Path, id_column: str, label: str, *, id_kind: str = "raw", role: str = "brand"
) -> PartyTable:
    """Read the seed: its ids (normalized as ``id_kind`` for the duplicate check) and ``label``.

    Raises:
        InputError: missing file or column, empty table, an unknown id kind, two rows with the
            same person's id, a label that is not binary or has one class only.
    """
    if id_kind not in ("raw", "phone", "email"):
        raise InputError(f"unknown id kind {id_kind!r} (raw, phone or email)")
    info = inspect_table(path, role=role)
    if not info.has_rows:
        raise InputError(f"{role} file {path}: the table has no rows")
    info.require([id_column, label], role=role)
    table = read_columns(path, list(dict.fromkeys([id_column, label])))
    # an empty or invalid id never matches (the alignment PSI sets it aside); two rows with one
    # person's id would make the alignment ambiguous
    ids = table[id_column].astype(str).str.strip()
    keys = normalize_column(ids, KeyKind(id_kind), NormalizationRules()).values
    duplicated = keys.duplicated() & keys.notna()
    if duplicated.any():
        row = _first_bad(duplicated)
        raise InputError(f"{role} file {path}, row {row}, column {id_column!r}: duplicate id")
    text = table[label].astype(str).str.strip().str.lower()
    ones, zeros = text.isin(_TRUE), text.isin(_FALSE)
    if not (ones | zeros).all():
        raise InputError(
            f"{role} file {path}, row {_first_bad(~(ones | zeros))}, column {label!r}: "
            "the label must be binary (0/1)"
        )
    if ones.all() or zeros.all():
        raise InputError(f"{role} file {path}, column {label!r}: the label has only one class")
    return PartyTable(
        ids.reset_index(drop=True),
        np.zeros((len(ids), 0)),
        (),
        {label: np.asarray(ones, dtype=np.float64)},
        id_kind=id_kind,
    )
