"""The lookalike job: its pure parts, and a whole job in process on generated data.

The in-process job records every request and reply byte for byte (what the Flower relay or the
job stream carries in deployment) and checks that no raw identifier, no label window and no
partner feature value crosses, that the audience holds no matched person, and that the
partner refuses requests out of order.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federated.brand import TrainingConfig
from federated.errors import ProtocolError
from federated.job import JobOptions, PartyTable, Standardizer, pack, unpack
from federated.lookalike import (
    AudienceChoice,
    LookalikeOptions,
    LookalikePartnerJob,
    band_counts,
    expected_lift,
    run_brand_lookalike,
    score_population,
    select_audience,
    suppress_small_cells,
)
from federated.model import OptimizerConfig, OptimizerKind
from federated.partner import PartnerConfig
from pec.datagen import generate_tables
from pec.errors import InputError
from psi.normalize import KeyKind, NormalizationRules, normalize_column

FEATURES = ("income_level", "car_insurance", "insurance_claims", "car_transactions",
            "car_app_minutes")  # fmt: skip
OPT = OptimizerConfig(kind=OptimizerKind.NESTEROV, learning_rate=1.0, momentum=0.7)
TRAINING = TrainingConfig(epochs=8, batch_size=0, optimizer=OPT, patience=3, stop_on="auc")


# -- pure parts ------------------------------------------------------------------------------------


@pytest.mark.unit
def test_band_counts_put_a_score_on_an_edge_in_the_band_above() -> None:
    scores = np.array([-5.0, -1.0, -0.5, 0.0, 0.0, 0.3, 1.0, 7.0])
    counts = band_counts(scores, np.array([-1.0, 0.0, 1.0]))
    assert counts.tolist() == [1, 2, 3, 2]  # (-inf,-1) [-1,0) [0,1) [1,inf)
    with pytest.raises(ValueError, match="ascending"):
        band_counts(scores, np.array([0.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        band_counts(scores, np.array([0.0, np.inf]))


@pytest.mark.unit
def test_small_cells_are_suppressed_and_empty_ones_released() -> None:
    counts = np.array([0, 1, 19, 20, 500], dtype=np.int64)
    assert suppress_small_cells(counts, 20) == [0, None, None, 20, 500]
    assert suppress_small_cells(counts, 1) == [0, 1, 19, 20, 500]


@pytest.mark.unit
def test_audience_by_threshold_excludes_matched_rows_best_first() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.95, 0.5, 0.8])
    rows = select_audience(scores, np.array([3]), threshold=0.5)
    assert rows.tolist() == [0, 2, 5, 4]  # row 3 is matched; ties by the lower row
    assert select_audience(scores, np.array([], dtype=np.int64), threshold=0.99).tolist() == []


@pytest.mark.unit
def test_audience_by_size_takes_the_best_eligible_and_breaks_ties_by_row() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.95, 0.5, 0.8, 0.8])
    assert select_audience(scores, np.array([3]), size=3).tolist() == [0, 2, 5]
    assert select_audience(scores, np.array([0, 3]), size=5).tolist() == [2, 5, 6, 4, 1]
    assert select_audience(scores, np.array([3]), size=0).tolist() == []
    with pytest.raises(ValueError, match="more than 5 eligible"):
        select_audience(scores, np.array([0, 3]), size=6)
    with pytest.raises(ValueError, match="threshold or an audience size"):
        select_audience(scores, np.array([3]), threshold=0.5, size=2)


@pytest.mark.unit
def test_audience_by_size_matches_a_sort_on_random_scores() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 50, 2_000).astype(float)  # many ties
    excluded = rng.choice(2_000, 300, replace=False)
    eligible = np.setdiff1d(np.arange(2_000), excluded)
    expected = eligible[np.lexsort((eligible, -scores[eligible]))][:700]
    assert select_audience(scores, excluded, size=700).tolist() == expected.tolist()


@pytest.mark.unit
def test_expected_lift_is_the_rate_above_the_cut_over_the_base_rate() -> None:
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=float)  # base rate 0.2
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.3, 0.2, 0.1, 0.0, 0.4])
    assert expected_lift(labels, scores, 0.7) == pytest.approx((2 / 3) / 0.2)
    assert expected_lift(labels, scores, 0.0) == pytest.approx(1.0)
    assert expected_lift(labels, scores, 0.95) is None  # no row that high
    assert expected_lift(np.zeros(10), scores, 0.5) is None  # no positive


@pytest.mark.unit
def test_population_scores_do_not_depend_on_the_chunk_size() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1_003, 4))
    standardizer = Standardizer.fit(x[:500])
    w = rng.normal(size=4)
    whole = standardizer.apply(x) @ w
    assert np.allclose(score_population(x, standardizer, w, chunk_rows=97), whole)
    with pytest.raises(ValueError):
        score_population(x, standardizer, w[:3])


@pytest.mark.unit
def test_audience_choice_takes_exactly_one_valid_rule() -> None:
    with pytest.raises(ValueError):
        AudienceChoice()
    with pytest.raises(ValueError):
        AudienceChoice(threshold=0.5, size=10)
    with pytest.raises(ValueError):
        AudienceChoice(threshold=1.0)
    with pytest.raises(ValueError):
        LookalikeOptions(audience=AudienceChoice(size=10), bands=1)


# -- a whole job in process ------------------------------------------------------------------------


class Recorder:
    def __init__(self, partner: LookalikePartnerJob) -> None:
        self.partner = partner
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, request: bytes) -> bytes:
        self.messages.append(("brand->partner", request))
        reply = self.partner.answer(request)
        self.messages.append(("partner->brand", reply))
        return reply


def generated(brand_rows: int = 3_000, partner_rows: int = 12_000, label: str = "premium"):
    data = generate_tables(brand_rows, partner_rows, overlap=0.6, seed=11)
    seed = PartyTable(
        data.brand["phone"].astype(str),
        np.zeros((brand_rows, 0)),
        (),
        {label: data.brand[label].to_numpy(float)},
        id_kind="phone",
    )
    population = PartyTable(
        data.partner["mobile"].astype(str),
        data.partner[list(FEATURES)].to_numpy(float),
        FEATURES,
        id_kind="phone",
    )
    return data, seed, population


def phones(values: pd.Series) -> set[str]:
    normalized = normalize_column(values.astype(str), KeyKind.PHONE, NormalizationRules()).values
    return {v for v in normalized.tolist() if v is not None}


@pytest.fixture(scope="module")
def job():
    data, seed, population = generated()
    partner = LookalikePartnerJob(
        "lal-1",
        population,
        PartnerConfig(optimizer=OPT, min_key_bits=512),
        min_cell=20,
        new_handle=lambda: "aud-test",
        chunk_rows=1_000,
    )
    recorder = Recorder(partner)
    options = LookalikeOptions(
        audience=AudienceChoice(size=2_000), job=JobOptions(key_bits=512, training=TRAINING)
    )
    result = run_brand_lookalike("lal-1", seed, recorder, options)
    return data, partner, recorder, result


@pytest.mark.integration
def test_the_audience_is_the_best_unmatched_people_and_lifts_the_label(job) -> None:
    data, partner, _, result = job
    assert partner.done and partner.audience_rows is not None
    assert result.audience_handle == "aud-test" and result.audience_size == 2_000
    rows = partner.audience_rows
    assert len(rows) == len(set(rows.tolist())) == 2_000
    matched = set(partner.rows.tolist())
    assert matched and not matched & set(rows.tolist())  # no seed member in the audience
    # nobody the brand has (by normalized phone) is in the audience
    assert not phones(data.partner["mobile"].iloc[rows]) & phones(data.brand["phone"])
    # people without an id could not be delivered to: neither counted nor selected
    blank = np.flatnonzero(data.partner["mobile"].astype(str).str.strip().to_numpy() == "")
    assert len(blank) > 0 and not set(blank.tolist()) & set(rows.tolist())
    scores = partner.population_scores
    eligible = np.setdiff1d(np.arange(len(scores)), np.union1d(partner.rows, blank))
    assert scores[rows].min() >= np.sort(scores[eligible])[::-1][1_999]
    # the distribution counts every unmatched person once (suppressed bands hold < 20 each)
    released = [c for c in partner.distribution if c is not None]
    suppressed = sum(c is None for c in partner.distribution)
    assert sum(released) <= len(eligible) <= sum(released) + 19 * suppressed
    assert [b.count for b in result.bands] == partner.distribution
    assert len(result.bands) == 20 and result.min_cell == 20
    # the model ranks: the holdout's top decile and the audience lift the label
    evaluation = result.evaluation
    assert evaluation is not None and evaluation.auc > 0.7 and evaluation.lift[0] > 2.0
    assert result.expected_lift is not None and result.expected_lift > 1.5
    assert 0 < result.cut_score < 1
    assert result.holdout_rows_at_cut == int((result.holdout_scores >= result.cut_score).sum())
    assert list(result.phase_seconds) == ["align", "train", "score", "distribution", "audience"]
    assert sum(result.phase_seconds.values()) <= result.seconds + 0.01  # rounded to 1 ms each


@pytest.mark.integration
def test_no_raw_identifier_label_or_feature_value_crosses(job) -> None:
    data, _, recorder, result = job
    brand_phones = phones(data.brand["phone"]) | phones(data.partner["mobile"])
    digits = {p.removeprefix("+86") for p in brand_phones}
    # the tags are small integers, whose float64 bytes also spell ordinary int64 row positions
    # (2.0 big-endian is 64 little-endian): look for windows of 16 values of each tag column,
    # and for single values above 5 in what the partner sends
    x = data.partner[list(FEATURES)].to_numpy(float)
    windows = [x[100:116, j].astype(d).tobytes() for j in range(x.shape[1]) for d in ("<f8", "<i8")]
    values = np.unique(x.ravel())
    patterns = {struct.pack("<d", v) for v in values[values > 5].tolist()}
    y = data.brand["premium"].to_numpy()
    start = next(i for i in range(len(y)) if 3 <= y[i : i + 16].sum() <= 13)
    window = y[start : start + 16]
    label_blobs = [window.astype("<f8").tobytes(), window.astype("<i8").tobytes()]
    assert len(recorder.messages) == 2 * result.round_trips
    for direction, data_bytes in recorder.messages:
        runs = set(re.findall(rb"\d{11}", data_bytes))
        assert not {r.decode() for r in runs} & digits, f"a phone number in a {direction} message"
        for blob in label_blobs:
            assert blob not in data_bytes
        for blob in windows:
            assert blob not in data_bytes, f"partner tag values in a {direction} message"
        if direction == "partner->brand":
            for p in patterns:
                assert p not in data_bytes, f"a partner tag value in a {direction} message"
    # the partner's last two replies carry counts and the handle, nothing per person
    distribution, audience = recorder.messages[-3][1], recorder.messages[-1][1]
    assert len(distribution) < 600 and len(audience) < 300


@pytest.mark.integration
def test_the_partner_refuses_out_of_order_repeated_and_too_small_requests() -> None:
    data, seed, population = generated(1_500, 4_000)
    partner = LookalikePartnerJob(
        "lal-2", population, PartnerConfig(optimizer=OPT, min_key_bits=512), min_cell=50
    )
    with pytest.raises(ProtocolError, match="unexpected distribution"):
        partner.answer(pack("distribution", {"job": "lal-2", "edges": [0.0]}))
    sent: list[bytes] = []

    def exchange(request: bytes) -> bytes:
        sent.append(request)
        reply = partner.answer(request)
        if unpack(request)[0] == "distribution":
            # a second distribution with shifted edges would narrow the suppressed cells
            with pytest.raises(ProtocolError, match="already released"):
                partner.answer(request)
            with pytest.raises(ProtocolError, match="not with scoring"):
                partner.answer(pack("score", {"job": "lal-2", "set": "holdout", "final": True}))
        return reply

    options = LookalikeOptions(
        audience=AudienceChoice(threshold=0.999999),  # nobody scores that high
        job=JobOptions(key_bits=512, training=TRAINING),
        min_cell=5,  # the partner's 50 wins
    )
    with pytest.raises(InputError, match=r"refused the audience: .*minimum of 50"):
        run_brand_lookalike("lal-2", seed, exchange, options)
    assert partner.done and partner.audience_rows is None and partner.refusal
    with pytest.raises(ProtocolError, match="ended"):
        partner.answer(pack("audience", {"job": "lal-2", "size": 100, "final": True}))


@pytest.mark.integration
def test_artifacts_keep_the_audience_at_the_partner(job, tmp_path: Path) -> None:
    import json

    from federated.lookalike_artifacts import write_brand_lookalike, write_partner_audience

    data, partner, _, result = job
    summary = write_brand_lookalike(result, tmp_path / "brand")
    write_partner_audience(partner, tmp_path / "partner")
    assert {p.name for p in (tmp_path / "brand").iterdir()} == {
        "lookalike.json",
        "lookalike.png",
        "holdout_scores.csv",
    }
    stored = json.loads((tmp_path / "brand" / "lookalike.json").read_text())
    assert stored == json.loads(json.dumps(summary))
    assert stored["audience"]["size"] == 2_000 and stored["audience"]["handle"] == "aud-test"
    assert len(stored["distribution"]["bands"]) == 20
    audience = pd.read_csv(tmp_path / "partner" / "audience.csv", dtype=str, keep_default_na=False)
    assert list(audience.columns) == ["mobile", "score"] and len(audience) == 2_000
    assert (
        audience["mobile"].tolist()
        == data.partner["mobile"].iloc[partner.audience_rows].astype(str).tolist()
    )
    brand_text = (tmp_path / "brand" / "lookalike.json").read_text()
    assert not {p.removeprefix("+86") for p in phones(audience["mobile"])} & set(
        re.findall(r"\d{11}", brand_text)
    )
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.integration
def test_an_audience_by_threshold_is_everyone_unmatched_scoring_at_least_it() -> None:
    _, seed, population = generated(1_500, 5_000)
    partner = LookalikePartnerJob(
        "lal-3", population, PartnerConfig(optimizer=OPT, min_key_bits=512), min_cell=20
    )
    options = LookalikeOptions(
        audience=AudienceChoice(threshold=0.3), job=JobOptions(key_bits=512, training=TRAINING)
    )
    result = run_brand_lookalike("lal-3", seed, partner.answer, options)
    assert partner.audience_rows is not None and partner.population_scores is not None
    intercept = result.job.models[0].intercept
    probability = 1 / (1 + np.exp(-(partner.population_scores + intercept)))
    eligible = np.ones(len(probability), dtype=bool)
    eligible[partner.rows] = False
    eligible[partner.without_id] = False
    expected = np.flatnonzero(eligible & (probability >= 0.3 - 1e-9))
    assert sorted(partner.audience_rows.tolist()) == expected.tolist()
    assert result.audience_size == len(expected) and result.cut_score >= 0.3 - 1e-9
    # the released bands from 0.30 up hold the audience (none of them suppressed here)
    above = [b.count for b in result.bands if b.low >= 0.3 - 1e-9]
    if None not in above:
        assert sum(c for c in above if c is not None) == result.audience_size
