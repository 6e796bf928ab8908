"""Scores for every new lead: the federated score when matched, the brand's part otherwise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from federated.scoring import score_all_leads
from pec.errors import InputError

pytestmark = pytest.mark.unit


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "brand_model.json").write_text(
        json.dumps(
            {
                "job_id": "j",
                "features": ["visits", "drive"],
                "standardization": {"mean": [2.0, 0.5], "scale": [2.0, 0.5]},
                "models": {
                    "speed": {"weights": [1.0, -0.5], "intercept": -0.25},
                    "revenue": {"weights": [0.0, 2.0], "intercept": 0.5},
                },
            }
        )
    )
    pd.DataFrame(
        {"id": ["138-1", "138-3"], "score": [0.9, 0.1], "score_speed": [0.9, 0.1],
         "score_revenue": [0.2, 0.8]}
    ).to_csv(tmp_path / "test_scores.csv", index=False)  # fmt: skip
    return tmp_path


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_matched_leads_keep_the_federated_score_and_others_get_the_brand_part(
    model_dir: Path,
) -> None:
    leads = pd.DataFrame(
        {"lead_id": ["L1", "L2", "L3", "L4"], "phone": ["138-1", "138-2", "138-3", ""],
         "visits": ["4", "2", "0", "6"], "drive": ["1", "0", "1", "0"]}
    )  # fmt: skip
    scores = score_all_leads(model_dir, leads, "phone", keep=("lead_id",))
    assert list(scores.columns) == ["lead_id", "matched", "score_speed", "score_revenue"]
    assert scores["matched"].tolist() == [1, 0, 1, 0]
    assert scores.loc[0, "score_speed"] == pytest.approx(0.9)
    assert scores.loc[2, "score_revenue"] == pytest.approx(0.8)
    # L2: visits 2 -> 0, drive 0 -> -1 after standardization
    assert scores.loc[1, "score_speed"] == pytest.approx(_sigmoid(0.0 + 0.5 - 0.25), abs=1e-6)
    assert scores.loc[1, "score_revenue"] == pytest.approx(_sigmoid(-2.0 + 0.5), abs=1e-6)
    # L4 has no phone: never matched, scored by the brand's part
    assert scores.loc[3, "score_speed"] == pytest.approx(_sigmoid(2.0 + 0.5 - 0.25), abs=1e-6)
    assert scores[["score_speed", "score_revenue"]].apply(lambda c: c.between(0, 1)).all().all()


def test_a_non_numeric_feature_names_the_row_and_column(model_dir: Path) -> None:
    leads = pd.DataFrame({"phone": ["1", "2"], "visits": ["1", "many"], "drive": ["0", "1"]})
    with pytest.raises(InputError, match=r"row 2, column 'visits'"):
        score_all_leads(model_dir, leads, "phone")


def test_a_missing_feature_column_is_named(model_dir: Path) -> None:
    with pytest.raises(InputError, match="'drive'"):
        score_all_leads(model_dir, pd.DataFrame({"phone": ["1"], "visits": ["1"]}), "phone")
