"""``pec psi aggregate`` end to end: two processes, a real Paillier key, the released cells."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


def pec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pec", "psi", "aggregate", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_aggregate_releases_cells_and_suppresses_small_ones(tmp_path: Path) -> None:
    brand = pd.DataFrame({"phone": [f"138{i:08d}" for i in range(120)]})
    partner_phones = [f"+86 138{i:08d}" for i in range(60, 300)]
    groups = ["tesla" if i % 10 else "nio" for i in range(60, 300)]
    partner = pd.DataFrame({"mobile": partner_phones, "competitor": groups})
    brand.to_csv(tmp_path / "lost.csv", index=False)
    partner.to_csv(tmp_path / "tags.csv", index=False)
    result = pec(
        "lost.csv", "tags.csv", "--key", "phone=mobile", "--group", "competitor",
        "--min-cell", "10", "--key-bits", "1024", "--out", "out", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # matched: 60..119 -> 6 "nio" (multiples of 10), 54 "tesla"
    assert summary["intersection"] == 60
    assert summary["cells"] == {"nio": None, "tesla": 54}
    table = pd.read_csv(tmp_path / "out" / "aggregate.csv", dtype=str, keep_default_na=False)
    assert table.values.tolist() == [["nio", "", "1"], ["tesla", "54", "0"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["aggregate.csv", "summary.json"]


def test_aggregate_bad_group_column_exits_2(tmp_path: Path) -> None:
    pd.DataFrame({"phone": ["13800000000"]}).to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame({"mobile": ["13800000000"]}).to_csv(tmp_path / "p.csv", index=False)
    result = pec("b.csv", "p.csv", "--key", "phone=mobile", "--group", "brand", "--out", "out",
                 cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "partner file p.csv: no column 'brand'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_aggregate_crosses_two_partner_columns_and_gives_shares(tmp_path: Path) -> None:
    brand = pd.DataFrame({"phone": [f"138{i:08d}" for i in range(200)]})
    people = range(100, 400)
    partner = pd.DataFrame(
        {
            "mobile": [f"138{i:08d}" for i in people],
            "competitor": ["tesla" if i % 2 else "byd" for i in people],
            "tier": ["premium" if i % 4 < 2 else "" for i in people],
        }
    )
    brand.to_csv(tmp_path / "lost.csv", index=False)
    partner.to_csv(tmp_path / "tags.csv", index=False)
    result = pec(
        "lost.csv", "tags.csv", "--key", "phone=mobile", "--group", "competitor*tier",
        "--min-cell", "20", "--key-bits", "1024", "--out", "out", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    matched = partner[partner["mobile"].isin(brand["phone"])].replace({"tier": {"": "(missing)"}})
    truth = (matched["competitor"] + " x " + matched["tier"]).value_counts().to_dict()
    assert summary["intersection"] == 100 and summary["cells"] == truth  # every cell is 25
    assert summary["shares"] == {label: 0.25 for label in truth}


def test_aggregate_crossing_names_the_missing_column(tmp_path: Path) -> None:
    pd.DataFrame({"phone": ["13800000000"]}).to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame({"mobile": ["13800000000"], "competitor": ["nio"]}).to_csv(
        tmp_path / "p.csv", index=False
    )
    result = pec("b.csv", "p.csv", "--key", "phone=mobile", "--group", "competitor*tier",
                 "--out", "out", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "no column 'tier'" in result.stderr and not (tmp_path / "out").exists()
    repeated = pec("b.csv", "p.csv", "--key", "phone=mobile", "--group", "competitor*competitor",
                   "--out", "out", cwd=tmp_path)  # fmt: skip
    assert repeated.returncode == 2 and "each once" in repeated.stderr
