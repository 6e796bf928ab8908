"""A whole VFL job in process: PSI alignment, training, evaluation, scoring, refusals.

The brand's driver talks to the partner's responder through a function that records every
request and reply, byte for byte: the same bytes the Flower relay carries in deployment.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federated.brand import TrainingConfig
from federated.errors import ProtocolError, WireFormatError
from federated.job import JobOptions, PartnerJob, PartyTable, pack, run_brand_job, unpack
from federated.model import OptimizerConfig, OptimizerKind
from federated.partner import PartnerConfig
from pec.errors import InputError
from tests.federated.conftest import dataset

pytestmark = pytest.mark.integration

# the defaults of `pec vfl local`
OPT = OptimizerConfig(kind=OptimizerKind.NESTEROV, learning_rate=1.0, momentum=0.7)
TRAINING = TrainingConfig(epochs=8, batch_size=0, optimizer=OPT, patience=3, stop_on="auc")


def tables(name: str, brand_frac: float = 0.95, partner_frac: float = 0.9):
    guest = pd.read_csv(dataset(f"{name}_hetero_guest.csv"))
    host = pd.read_csv(dataset(f"{name}_hetero_host.csv"))
    # different row orders, partly different people on each side
    guest = guest.sample(frac=brand_frac, random_state=1).reset_index(drop=True)
    host = host.sample(frac=partner_frac, random_state=2).reset_index(drop=True)
    bf = [c for c in guest.columns if c.startswith("x")]
    pf = [c for c in host.columns if c.startswith("x")]
    # identifiers carry a tag, so the transcript audit can look for any of them
    brand = PartyTable(
        "cust-" + guest["id"].astype(str),
        guest[bf].to_numpy(float),
        tuple(bf),
        {"y": guest["y"].to_numpy(float)},
    )
    partner = PartyTable("cust-" + host["id"].astype(str), host[pf].to_numpy(float), tuple(pf))
    return guest, host, brand, partner


class Recorder:
    def __init__(self, partner: PartnerJob) -> None:
        self.partner = partner
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, request: bytes) -> bytes:
        self.messages.append(("brand->partner", request))
        reply = self.partner.answer(request)
        self.messages.append(("partner->brand", reply))
        return reply


def run(name: str, **kw):
    guest, host, brand, partner = tables(name, **kw)
    job = PartnerJob("job-1", partner, config=PartnerConfig(optimizer=OPT, min_key_bits=512))
    recorder = Recorder(job)
    result = run_brand_job("job-1", brand, recorder, JobOptions(key_bits=512, training=TRAINING))
    return guest, host, job, recorder, result


@pytest.fixture(scope="module")
def credit():
    return run("default_credit")


def test_job_matches_scikit_learn_on_the_same_rows(credit) -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    guest, host, job, _, result = credit
    pooled = guest.merge(host, on="id", suffixes=("_b", "_p"))
    assert result.aligned_rows == len(pooled)  # PSI found exactly the shared ids
    holdout = set(result.scored_ids.str[5:].astype(int))
    features = [c for c in pooled.columns if c.startswith("x")]
    train = pooled[~pooled["id"].isin(holdout)]
    test = pooled.set_index("id").loc[result.scored_ids.str[5:].astype(int)]
    model = linear_model.LogisticRegression(max_iter=1000).fit(train[features], train["y"])
    reference = model.decision_function(test[features])
    from federated.metrics import roc_auc

    auc_ref = roc_auc(test["y"].to_numpy(), reference)
    ours = result.models[0].evaluation
    assert ours is not None
    # The holdout here is a fresh random fifth of the aligned rows on every run (the aligned order
    # follows the per-run match ids), so the gap is a random trial: nine runs on 2026-12-06 gave
    # -0.0064 ... +0.0016, and a CI run failed the old 0.005 bound. The 0.005 target is
    # held on a fixed split by tests/federated/test_protocol.py; this job-level check allows 0.01,
    # the lead-scoring target of the marketing jobs. The brand's features alone score ~0.07 lower.
    assert abs(ours.auc - auc_ref) <= 0.01, (ours.auc, auc_ref)
    assert ours.ks > 0.3 and ours.lift[0] > 2.0
    assert result.holdout_rows == len(holdout) == round(0.2 * result.aligned_rows)
    assert job.done and len(job.models) == 1
    assert result.partner_features == tuple(c for c in host.columns if c.startswith("x"))


def test_transcript_carries_no_partner_feature_no_label_no_raw_id(credit) -> None:
    guest, host, _, recorder, result = credit
    values = np.unique(host[[c for c in host.columns if c.startswith("x")]].to_numpy().ravel())
    values = values[np.abs(values) > 1e-12]
    patterns = {struct.pack(f"{e}d", v) for v in values.tolist() for e in "<>"}
    y = guest["y"].to_numpy()
    start = next(i for i in range(len(y)) if 3 <= y[i : i + 16].sum() <= 13)  # both classes
    window = y[start : start + 16]
    label_blobs = [window.astype("<f8").tobytes(), window.astype("<i8").tobytes()]
    assert len(recorder.messages) == 2 * result.round_trips
    for direction, data in recorder.messages:
        for p in patterns:
            assert p not in data, f"a partner feature value's bytes appear in a {direction} message"
        for blob in label_blobs:
            assert blob not in data
        assert b"cust-" not in data, "a raw identifier appears in a message"


def test_several_labels_train_several_models() -> None:
    guest, host, brand, partner = tables("breast")
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(len(guest)) < 0.2, 1 - guest["y"], guest["y"]).astype(float)
    brand = PartyTable(
        brand.ids, brand.features, brand.feature_names, {"y": brand.labels["y"], "noisy": noisy}
    )
    job = PartnerJob("job-2", partner, config=PartnerConfig(optimizer=OPT, min_key_bits=512))
    result = run_brand_job("job-2", brand, job.answer, JobOptions(key_bits=512, training=TRAINING))
    assert [m.label for m in result.models] == ["y", "noisy"]
    assert len(job.models) == 2
    auc = {m.label: m.evaluation.auc for m in result.models if m.evaluation}
    assert auc["y"] > 0.95 and 0.6 < auc["noisy"] < auc["y"]


def test_test_rows_are_scored_for_matched_ids_only() -> None:
    guest, host, brand, partner = tables("breast", 1.0, 1.0)
    cut = 400
    train_b = PartyTable(
        brand.ids[:cut], brand.features[:cut], brand.feature_names, {"y": brand.labels["y"][:cut]}
    )
    test_b = PartyTable(
        brand.ids[cut:].reset_index(drop=True),
        brand.features[cut:],
        brand.feature_names,
        {"y": brand.labels["y"][cut:]},
    )
    keep = ~partner.ids.isin(
        set(brand.ids[cut : cut + 20])
    )  # 20 test people unknown to the partner
    test_p = PartyTable(
        partner.ids[keep].reset_index(drop=True),
        partner.features[keep.to_numpy()],
        partner.feature_names,
    )
    job = PartnerJob("job-3", partner, test_p, PartnerConfig(optimizer=OPT, min_key_bits=512))
    result = run_brand_job(
        "job-3", train_b, job.answer, JobOptions(key_bits=512, training=TRAINING), test=test_b
    )
    assert result.evaluated_on == "test" and result.holdout_rows == 0
    assert result.test_rows == len(guest) - cut - 20
    assert set(result.scored_ids) == set(test_b.ids) - set(brand.ids[cut : cut + 20])
    scores = result.models[0].scores
    assert np.all((scores >= 0) & (scores <= 1))
    assert result.models[0].evaluation is not None and result.models[0].evaluation.auc > 0.95


def test_unlabeled_new_leads_are_scored_and_the_models_evaluated_on_a_holdout() -> None:
    guest, _, brand, partner = tables("breast", 1.0, 1.0)
    cut = 450
    train_b = PartyTable(
        brand.ids[:cut], brand.features[:cut], brand.feature_names, {"y": brand.labels["y"][:cut]}
    )
    new_b = PartyTable(  # new leads: no labels
        brand.ids[cut:].reset_index(drop=True), brand.features[cut:], brand.feature_names
    )
    job = PartnerJob("job-3b", partner, partner, PartnerConfig(optimizer=OPT, min_key_bits=512))
    result = run_brand_job(
        "job-3b", train_b, job.answer, JobOptions(key_bits=512, training=TRAINING), test=new_b
    )
    assert result.evaluated_on == "holdout" and result.holdout_rows == round(cut * 0.2)
    assert result.scored_on == "test" and result.test_rows == len(guest) - cut
    assert sorted(result.scored_ids) == sorted(new_b.ids)  # in the alignment's order
    model = result.models[0]
    assert model.evaluation is not None and model.evaluation.auc > 0.95
    assert len(model.scores) == len(guest) - cut
    assert job.stage.value == "done"


def test_the_partner_refuses_to_train_on_an_overlap_below_its_minimum() -> None:
    _, _, brand, partner = tables("breast")
    config = PartnerConfig(optimizer=OPT, min_key_bits=512, min_aligned_rows=10_000)
    job = PartnerJob("job-min", partner, config=config)
    with pytest.raises(ProtocolError, match=r"overlap \(\d+ rows\) is below the partner's minimum"):
        run_brand_job("job-min", brand, job.answer, JobOptions(key_bits=512, training=TRAINING))
    assert job.models == []  # nothing was trained


def test_no_overlap_is_an_input_error() -> None:
    _, _, brand, partner = tables("breast")
    other = PartyTable(
        ("z" + partner.ids).reset_index(drop=True), partner.features, partner.feature_names
    )
    job = PartnerJob("job-4", other, config=PartnerConfig(min_key_bits=512))
    with pytest.raises(InputError, match="share 0 ids"):
        run_brand_job("job-4", brand, job.answer, JobOptions(key_bits=512, training=TRAINING))


def test_partner_refuses_foreign_replayed_and_out_of_stage_messages() -> None:
    _, _, brand, partner = tables("breast")
    job = PartnerJob("job-5", partner, config=PartnerConfig(min_key_bits=512))
    with pytest.raises(WireFormatError):
        job.answer(b"garbage")
    with pytest.raises(ProtocolError, match="another job"):
        job.answer(pack("score", {"job": "job-other", "set": "holdout"}))
    with pytest.raises(ProtocolError, match="unexpected"):
        job.answer(pack("score", {"job": "job-5", "set": "holdout"}))  # before training
    with pytest.raises(ProtocolError, match="unexpected plan"):
        job.answer(
            pack("plan", {"job": "job-5", "models": 1, "train": 0, "valid": 0, "holdout": 0})
        )
    replies: list[bytes] = []

    def exchange(request: bytes) -> bytes:
        replies.append(request)
        return job.answer(request)

    def lying(request: bytes) -> bytes:
        op, header, payload = unpack(request)
        if op == "plan":  # one row twice, another never: not a partition of the aligned rows
            return job.answer(pack(op, header, payload[:-8] + payload[-16:-8]))
        return exchange(request)

    with pytest.raises(ProtocolError, match="partition"):
        run_brand_job("job-5", brand, lying, JobOptions(key_bits=512, training=TRAINING))
    # a replayed PSI request after the alignment is refused
    first_psi = replies[0]
    with pytest.raises(ProtocolError):
        job.answer(first_psi)


def test_envelope_round_trip_and_limits() -> None:
    data = pack("vfl", {"job": "j", "model": 0}, b"\x00\x01")
    assert unpack(data) == ("vfl", {"job": "j", "model": 0}, b"\x00\x01")
    with pytest.raises(WireFormatError):
        unpack(data[:14])
    with pytest.raises(WireFormatError):
        unpack(data[:11] + struct.pack(">I", 1 << 20) + data[15:])


def test_artifacts_are_split_per_party(credit, tmp_path: Path) -> None:
    import json

    from federated.artifacts import write_brand_outputs, write_partner_outputs

    _, host, job, _, result = credit
    metrics = write_brand_outputs(result, tmp_path / "brand")
    write_partner_outputs(job, tmp_path / "partner")
    assert {p.name for p in (tmp_path / "brand").iterdir()} == {
        "metrics.json",
        "model_card.json",
        "brand_model.json",
        "roc.png",
        "lift.png",
    }
    assert metrics["auc"] == json.loads((tmp_path / "brand" / "metrics.json").read_text())["auc"]
    for key in ("auc", "ks", "train_rows", "test_rows", "epochs", "seconds"):
        assert key in metrics
    brand_model = json.loads((tmp_path / "brand" / "brand_model.json").read_text())
    partner_model = json.loads((tmp_path / "partner" / "partner_model.json").read_text())
    assert len(brand_model["models"]["y"]["weights"]) == len(result.brand_features)
    assert len(partner_model["models"][0]["weights"]) == len(result.partner_features)
    card = json.loads((tmp_path / "brand" / "model_card.json").read_text())
    assert card["features"]["partner"] == list(result.partner_features)
    assert "weights" not in json.dumps(card)
    # the brand's files carry none of the partner's weights
    brand_text = "".join(p.read_text() for p in (tmp_path / "brand").glob("*.json"))
    for w in partner_model["models"][0]["weights"]:
        assert repr(w) not in brand_text
    assert not list(tmp_path.glob(".*partial*"))


def test_balanced_class_weights_raise_the_scores_of_a_rare_outcome() -> None:
    _, _, brand, partner = tables("default_credit", 0.6, 0.6)
    scores = {}
    for balance in (False, True):
        job = PartnerJob("job-w", partner, config=PartnerConfig(optimizer=OPT, min_key_bits=512))
        options = JobOptions(key_bits=512, training=TRAINING, balance_classes=balance)
        result = run_brand_job("job-w", brand, job.answer, options)
        scores[balance] = result.models[0]
    base_rate = float(brand.labels["y"].mean())  # about 0.22
    # unweighted: near the base rate (early stopping on AUC may keep an early, less calibrated
    # epoch: a CI run saw 0.316 against 0.222); weighted: positives weigh ~3.5x, scores shift up
    assert abs(scores[False].scores.mean() - base_rate) < 0.15
    assert scores[True].scores.mean() > 0.4
    assert scores[True].scores.mean() > scores[False].scores.mean() + 0.1
    plain, weighted = scores[False].evaluation, scores[True].evaluation
    assert plain is not None and weighted is not None
    assert abs(weighted.auc - plain.auc) < 0.08  # the ranking moves little (splits vary per run)


def test_phone_ids_align_across_formats_and_empty_ids_never_match() -> None:
    guest, host, brand, partner = tables("breast", 1.0, 1.0)
    raw_b = brand.ids.str[5:].astype(int)
    raw_p = partner.ids.str[5:].astype(int)
    phones_b = ("+86 138-0000-" + raw_b.map("{:04d}".format)).where(raw_b % 50 != 0, "")
    phones_p = "0086 1380000" + raw_p.map("{:04d}".format)
    brand_phone = PartyTable(
        phones_b, brand.features, brand.feature_names, brand.labels, id_kind="phone"
    )
    partner_phone = PartyTable(phones_p, partner.features, partner.feature_names, id_kind="phone")
    job = PartnerJob("job-p", partner_phone, config=PartnerConfig(optimizer=OPT, min_key_bits=512))
    result = run_brand_job(
        "job-p", brand_phone, job.answer, JobOptions(key_bits=512, training=TRAINING)
    )
    assert result.aligned_rows == int((raw_b % 50 != 0).sum())  # empty phones never match
    assert result.models[0].evaluation is not None and result.models[0].evaluation.auc > 0.95
