"""`pec vfl local`: bad input exits 2 before anything starts; a real run over Flower on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.federated.conftest import dataset

BASE = ["--id", "id", "--label", "y", "--key-bits", "512"]


def pec(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pec", "vfl", "local", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )  # fmt: skip


@pytest.fixture
def breast(tmp_path: Path) -> Path:
    guest = pd.read_csv(dataset("breast_hetero_guest.csv")).sample(frac=1.0, random_state=4)
    host = pd.read_csv(dataset("breast_hetero_host.csv")).sample(frac=1.0, random_state=5)
    guest.iloc[:450].to_csv(tmp_path / "brand.csv", index=False)
    host.iloc[:500].to_csv(tmp_path / "partner.csv", index=False)
    test_ids = set(guest["id"].iloc[450:])
    guest.iloc[450:].to_csv(tmp_path / "brand_test.csv", index=False)
    host[host["id"].isin(test_ids)].iloc[10:].to_csv(tmp_path / "partner_test.csv", index=False)
    return tmp_path


def assert_nothing_written(folder: Path) -> None:
    assert not (folder / "out").exists()
    assert not list(folder.glob(".out.*/brand")) and not list(folder.glob(".out.*/partner"))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b, p: b.drop(columns=["y"]), "brand file brand.csv: no column 'y'"),
        (
            lambda b, p: b.assign(x3=b["x3"].astype(str).where(b.index != 7, "n/a")),
            "brand file brand.csv, row 8, column 'x3': not a number",
        ),
        (
            lambda b, p: b.assign(y=b["y"].where(b.index != 2, 2)),
            "brand file brand.csv, row 3, column 'y': the label must be binary",
        ),
        (
            lambda b, p: b.assign(y=0),
            "brand file brand.csv, column 'y': the label has only one class",
        ),
    ],
)
def test_bad_brand_input_exits_2_and_writes_nothing(breast: Path, change, expected: str) -> None:
    brand = pd.read_csv(breast / "brand.csv").reset_index(drop=True)
    change(brand, None).to_csv(breast / "brand.csv", index=False)
    done = pec(
        "--brand", "brand.csv", "--partner", "partner.csv", *BASE, "--out", "out", cwd=breast
    )
    assert done.returncode == 2, done.stderr
    assert expected in " ".join(done.stderr.split())
    assert_nothing_written(breast)


@pytest.mark.integration
def test_bad_partner_input_and_half_a_test_pair_exit_2(breast: Path) -> None:
    partner = pd.read_csv(breast / "partner.csv")
    partner.assign(x0=partner["x0"].astype(str).where(partner.index != 0, "")).to_csv(
        breast / "bad.csv", index=False
    )
    done = pec("--brand", "brand.csv", "--partner", "bad.csv", *BASE, "--out", "out", cwd=breast)
    assert done.returncode == 2
    assert "partner file bad.csv, row 1, column 'x0': not a number" in " ".join(done.stderr.split())
    done = pec(
        "--brand", "brand.csv", "--partner", "partner.csv", *BASE, "--out", "out",
        "--test-brand", "brand_test.csv", cwd=breast,
    )  # fmt: skip
    assert done.returncode == 2 and "give both or neither" in done.stderr
    done = pec("--brand", "nope.csv", "--partner", "partner.csv", *BASE, "--out", "out", cwd=breast)
    assert done.returncode == 2 and "brand file nope.csv: not found" in done.stderr
    assert_nothing_written(breast)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_vfl_local_over_flower_trains_scores_and_splits_artifacts(breast: Path) -> None:
    pytest.importorskip("flwr")
    done = pec(
        "--brand", "brand.csv", "--partner", "partner.csv", *BASE, "--out", "out",
        "--test-brand", "brand_test.csv", "--test-partner", "partner_test.csv",
        "--epochs", "3", "--json", cwd=breast,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    out = breast / "out"
    assert json.loads((out / "metrics.json").read_text())["auc"] == metrics["auc"]
    for key in ("auc", "ks", "train_rows", "test_rows", "epochs", "seconds"):
        assert key in metrics
    assert metrics["auc"] > 0.95 and metrics["evaluated_on"] == "test"
    brand, partner = pd.read_csv(breast / "brand.csv"), pd.read_csv(breast / "partner.csv")
    assert metrics["train_rows"] + metrics["valid_rows"] == len(
        set(brand["id"]) & set(partner["id"])
    )
    scores = pd.read_csv(out / "test_scores.csv")
    tests = set(pd.read_csv(breast / "brand_test.csv")["id"])
    expected = tests & set(pd.read_csv(breast / "partner_test.csv")["id"])
    assert list(scores.columns) == ["id", "score"] and set(scores["id"]) == expected
    assert metrics["test_rows"] == len(expected) == len(tests) - 10
    assert scores["score"].between(0, 1).all()
    assert (out / "roc.png").stat().st_size > 1000 and (out / "lift.png").stat().st_size > 1000
    card = json.loads((out / "model_card.json").read_text())
    assert card["features"]["partner"] == [c for c in partner.columns if c != "id"]
    assert json.loads((out / "partner" / "partner_summary.json").read_text())["models"] == 1
    assert "weights" not in (out / "model_card.json").read_text()
    assert not list(breast.glob(".out.*"))  # the staging folder is gone


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_no_overlap_exits_2_and_writes_nothing(breast: Path) -> None:
    pytest.importorskip("flwr")
    partner = pd.read_csv(breast / "partner.csv")
    partner.assign(id=partner["id"] + 100_000).to_csv(breast / "strangers.csv", index=False)
    done = pec(
        "--brand", "brand.csv", "--partner", "strangers.csv", *BASE, "--out", "out", cwd=breast
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "share 0 ids" in " ".join(done.stderr.split())
    assert_nothing_written(breast)
