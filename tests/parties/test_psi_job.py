"""A node's side of a PSI job checks its own table before it joins the protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from parties.psi_job import PsiJobSide
from pec.errors import InputError
from psi.wire import Reveal, Role

pytestmark = pytest.mark.unit


def _side(tmp_path: Path, table: Path, *, align: bool) -> PsiJobSide:
    return PsiJobSide(
        job_id="job-1", role=Role.RIGHT, table=table, keys="id=pid:raw", reveal=Reveal.BOTH,
        out=tmp_path / "out", workers=1, align=align,
    )  # fmt: skip


def test_an_aligned_job_refuses_a_table_that_already_has_a_match_id(tmp_path: Path) -> None:
    table = tmp_path / "partner.csv"
    table.write_text("pid,pec_match_id\np1,mine\np2,theirs\n")
    with pytest.raises(InputError, match="already has a column 'pec_match_id'"):
        _side(tmp_path, table, align=True).party()
    _side(tmp_path, table, align=False).party()  # without --align the column is just data


def test_a_job_refuses_a_table_with_a_repeated_column_name(tmp_path: Path) -> None:
    table = tmp_path / "partner.csv"
    table.write_text("pid,x,pid\np1,1,p9\n")
    with pytest.raises(InputError, match=r"column name 'pid' appears twice \(columns 1 and 3\)"):
        _side(tmp_path, table, align=False).party()
