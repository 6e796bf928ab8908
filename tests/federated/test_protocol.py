"""The two roles against each other in one process, on real vertically split data."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import pytest

from tests.federated.conftest import Split, load_split

torch = pytest.importorskip("torch")

from federated import (  # noqa: E402
    BrandTrainer,
    OptimizerConfig,
    PartnerConfig,
    PartnerTrainer,
    TrainingConfig,
    Transcript,
    from_wire,
    ks_statistic,
    roc_auc,
    run_in_process,
)
from federated.messages import EncryptedResiduals, PartialScores, ScoreRequest  # noqa: E402
from pec.paillier import KeyPair  # noqa: E402

pytestmark = pytest.mark.integration


@dataclass
class Run:
    split: Split
    brand: BrandTrainer
    partner: PartnerTrainer
    transcript: Transcript
    test_scores: np.ndarray


def train(split: Split, epochs: int, batch_size: int, learning_rate: float) -> Run:
    config = TrainingConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=OptimizerConfig(learning_rate=learning_rate),
        patience=3,
    )
    keys = KeyPair.generate(512)  # small key: speed only; jobs default to 2048 bits
    brand = BrandTrainer(
        "job-test",
        keys,
        split.xb["train"],
        split.y["train"],
        split.xb["valid"],
        split.y["valid"],
        config,
    )
    partner = PartnerTrainer(
        "job-test",
        split.xp["train"],
        split.xp["valid"],
        PartnerConfig(optimizer=config.optimizer, min_key_bits=512),
    )
    transcript = run_in_process(brand, partner)
    scores = brand.brand_scores(split.xb["test"]) + partner.score(split.xp["test"])
    return Run(split, brand, partner, transcript, scores)


def pooled_logistic_auc(split: Split) -> float:
    """Plain logistic regression on the pooled features (L-BFGS, tiny L2), the quality target."""
    x = np.hstack([split.xb["pooled_train"], split.xp["pooled_train"]])
    xt = torch.from_numpy(np.hstack([x, np.ones((len(x), 1))]))
    yt = torch.from_numpy(split.y["pooled_train"])
    w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w, yt)
        loss = loss + 0.5 / len(x) * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    xs = np.hstack([split.xb["test"], split.xp["test"], np.ones((len(split.y["test"]), 1))])
    return roc_auc(split.y["test"], xs @ w.detach().numpy())


@pytest.fixture(scope="module")
def credit_run() -> Run:
    return train(load_split("default_credit"), epochs=5, batch_size=4096, learning_rate=0.1)


@pytest.fixture(scope="module")
def breast_run() -> Run:
    return train(load_split("breast"), epochs=30, batch_size=128, learning_rate=0.1)


def test_default_credit_matches_pooled_logistic_regression(credit_run: Run) -> None:
    auc = roc_auc(credit_run.split.y["test"], credit_run.test_scores)
    reference = pooled_logistic_auc(credit_run.split)
    assert abs(auc - reference) <= 0.005, (auc, reference)
    assert auc > 0.70
    assert ks_statistic(credit_run.split.y["test"], credit_run.test_scores) > 0.25
    assert credit_run.brand.best_epoch >= 0


def test_default_credit_matches_scikit_learn(credit_run: Run) -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    split = credit_run.split
    model = linear_model.LogisticRegression(max_iter=1000)
    model.fit(
        np.hstack([split.xb["pooled_train"], split.xp["pooled_train"]]), split.y["pooled_train"]
    )
    reference = roc_auc(
        split.y["test"],
        model.decision_function(np.hstack([split.xb["test"], split.xp["test"]])),
    )
    auc = roc_auc(split.y["test"], credit_run.test_scores)
    assert abs(auc - reference) <= 0.005, (auc, reference)


def test_breast_cancer_learns(breast_run: Run) -> None:
    auc = roc_auc(breast_run.split.y["test"], breast_run.test_scores)
    assert abs(auc - pooled_logistic_auc(breast_run.split)) <= 0.01
    assert auc > 0.95


def _forbidden_partner_patterns(split: Split) -> set[bytes]:
    values = np.unique(np.concatenate([split.xp["train"].ravel(), split.xp["valid"].ravel()]))
    values = values[np.abs(values) > 1e-12]  # a zero score is not a zero feature
    patterns: set[bytes] = set()
    for v in values.tolist():
        patterns.add(struct.pack("<d", v))
        patterns.add(struct.pack(">d", v))
    return patterns


@pytest.mark.parametrize("run_name", ["credit_run", "breast_run"])
def test_transcript_carries_no_partner_feature_and_no_label(
    run_name: str, request: pytest.FixtureRequest
) -> None:
    # Prepare
    run: Run = request.getfixturevalue(run_name)
    split = run.split
    patterns = _forbidden_partner_patterns(split)
    feature_values = set(
        np.unique(np.concatenate([split.xp["train"].ravel(), split.xp["valid"].ravel()])).tolist()
    )
    feature_values.discard(0.0)
    labels = {"train": split.y["train"], "valid": split.y["valid"]}

    # Execute / Assert: every message, as bytes and as decoded fields
    assert run.transcript.messages
    for direction, data in run.transcript.messages:
        for p in patterns:
            assert p not in data, f"a partner feature value's bytes appear in a {direction} message"
        message = from_wire(data)
        if isinstance(message, PartialScores):
            assert not feature_values.intersection(message.scores.tolist())
            if message.valid_scores is not None:
                assert not feature_values.intersection(message.valid_scores.tolist())
        if isinstance(message, ScoreRequest):
            rows = message.rows
            y = labels[message.kind.value][rows]
            assert not np.array_equal(rows, y)
            for blob in (
                y.astype("<f8").tobytes(),
                y.astype("<i8").tobytes(),
                np.packbits(y.astype(np.uint8)).tobytes(),
            ):
                if len(blob) >= 8:
                    assert blob not in data, "labels appear in a brand->partner message"
            if message.update is not None:
                assert not feature_values.intersection(float(v) for v in message.update.values)
        if isinstance(message, EncryptedResiduals):
            assert all(c > 1 << 256 for c in message.ciphertexts)  # ciphertexts, not small values


def test_validation_riding_on_training_requests_saves_round_trips_and_changes_nothing() -> None:
    split = load_split("breast")
    runs = {}
    for merge in (True, False):
        config = TrainingConfig(
            epochs=4,
            batch_size=200,
            optimizer=OptimizerConfig(learning_rate=0.1),
            patience=4,
            merge_validation=merge,
        )
        keys = KeyPair.generate(512)
        brand = BrandTrainer(
            "job-m", keys, split.xb["train"], split.y["train"], split.xb["valid"],
            split.y["valid"], config,
        )  # fmt: skip
        partner = PartnerTrainer(
            "job-m", split.xp["train"], split.xp["valid"],
            PartnerConfig(optimizer=config.optimizer, min_key_bits=512),
        )  # fmt: skip
        runs[merge] = (brand, partner, run_in_process(brand, partner))
    merged, plain = runs[True], runs[False]
    # 4 epochs: 3 validations ride on the next epoch's first request, the last one cannot
    assert len(plain[2].messages) - len(merged[2].messages) == 2 * 3
    assert [h.epoch for h in merged[0].history] == [0, 1, 2, 3]
    for a, b in zip(merged[0].history, plain[0].history, strict=True):
        assert a.valid_auc == pytest.approx(b.valid_auc, abs=1e-9)
    np.testing.assert_allclose(merged[1].weights, plain[1].weights, atol=1e-9)
    np.testing.assert_allclose(merged[0].weights[0], plain[0].weights[0], atol=1e-9)


def test_early_stop_on_merged_validation_finishes_from_the_scored_stage() -> None:
    split = load_split("breast")
    config = TrainingConfig(
        epochs=30, batch_size=100, optimizer=OptimizerConfig(learning_rate=0.5), patience=1,
        stop_on="auc",
    )  # fmt: skip
    brand = BrandTrainer(
        "job-s", KeyPair.generate(512), split.xb["train"], split.y["train"], split.xb["valid"],
        split.y["valid"], config,
    )  # fmt: skip
    partner = PartnerTrainer(
        "job-s", split.xp["train"], split.xp["valid"],
        PartnerConfig(optimizer=config.optimizer, min_key_bits=512),
    )  # fmt: skip
    run_in_process(brand, partner)
    assert len(brand.history) < 30  # stopped early, on validation scores of a merged request
    best = min(brand.history, key=lambda h: (-round(h.valid_auc, 12), h.valid_loss))
    assert brand.best_epoch == best.epoch  # the best AUC, ties broken by the lower loss
    assert partner.stage.value == "finished"
