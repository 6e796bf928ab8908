"""Reading a party's table for a VFL job: which ids are duplicates, and how errors read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pec.errors import InputError
from pec.vfl_tables import load_party_table

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, phones: list[str]) -> Path:
    path = tmp_path / "brand.csv"
    pd.DataFrame(
        {"phone": phones, "visits": list(range(len(phones))), "y": [0, 1] * (len(phones) // 2)}
    ).to_csv(path, index=False)
    return path


def test_one_phone_written_two_ways_is_a_duplicate_naming_the_row(tmp_path: Path) -> None:
    path = _write(tmp_path, ["13812345678", "13900000000", "+86 138-1234-5678", "13700000000"])
    with pytest.raises(InputError, match=r"row 3, column 'phone': duplicate id"):
        load_party_table(path, "phone", role="brand", labels=["y"], id_kind="phone")


def test_repeated_ids_that_cannot_match_are_allowed(tmp_path: Path) -> None:
    # empty and broken phones never align, so several rows may carry them
    path = _write(tmp_path, ["", "n/a", "13812345678", "", "(+86)", "(+86)"])
    table = load_party_table(path, "phone", role="brand", labels=["y"], id_kind="phone")
    assert len(table.ids) == 6 and table.feature_names == ("visits",)


def test_raw_ids_are_compared_as_written(tmp_path: Path) -> None:
    path = _write(tmp_path, ["a", "b", "a ", "c"])
    with pytest.raises(InputError, match=r"row 3, column 'phone': duplicate id"):
        load_party_table(path, "phone", role="brand", labels=["y"])
