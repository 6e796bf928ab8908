"""State-machine checks of the roles, wire round trips and metrics, on tiny synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

import federated
from federated import (
    BrandStage,
    BrandTrainer,
    PartnerConfig,
    PartnerStage,
    PartnerTrainer,
    ProtocolError,
    RoleFinishedError,
    TrainingConfig,
    WireFormatError,
    from_wire,
    ks_statistic,
    roc_auc,
    run_in_process,
    to_wire,
)
from federated.messages import (
    EncryptedResiduals,
    GradientUpdate,
    KeyAnnouncement,
    PartialScores,
    ScoreKind,
    ScoreRequest,
)
from pec.paillier import KeyPair

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair.generate(512)


def make_roles(keys: KeyPair, epochs: int = 2) -> tuple[BrandTrainer, PartnerTrainer]:
    rng = np.random.default_rng(0)
    xb, xp = rng.normal(size=(60, 2)), rng.normal(size=(60, 3))
    y = (xb[:, 0] + xp[:, 0] + rng.normal(size=60) > 0).astype(float)
    config = TrainingConfig(epochs=epochs, batch_size=25)
    brand = BrandTrainer("job", keys, xb[:50], y[:50], xb[50:], y[50:], config)
    partner = PartnerTrainer("job", xp[:50], xp[50:], PartnerConfig(min_key_bits=512))
    return brand, partner


def test_exported_names() -> None:
    assert sorted(federated.__all__) == [
        "BrandStage",
        "BrandTrainer",
        "FederatedError",
        "OptimizerConfig",
        "OptimizerKind",
        "PartnerConfig",
        "PartnerStage",
        "PartnerTrainer",
        "ProtocolError",
        "RoleFinishedError",
        "TrainingConfig",
        "Transcript",
        "WireFormatError",
        "from_wire",
        "ks_statistic",
        "log_loss",
        "roc_auc",
        "run_in_process",
        "to_wire",
    ]


def test_full_run_reaches_done_and_roles_are_single_use(keys: KeyPair) -> None:
    # Prepare
    brand, partner = make_roles(keys)

    # Execute
    transcript = run_in_process(brand, partner)

    # Assert
    assert brand.stage is BrandStage.DONE
    assert partner.stage is PartnerStage.FINISHED
    assert len(brand.history) == 2
    assert transcript.total_bytes > 0
    with pytest.raises(RoleFinishedError):
        brand.start()
    with pytest.raises(RoleFinishedError):
        partner.handle(from_wire(transcript.messages[0][1]))


def test_out_of_order_repeated_and_foreign_messages_are_refused(keys: KeyPair) -> None:
    brand, partner = make_roles(keys)
    announcement = brand.start()
    ready = partner.handle(announcement)
    request = brand.handle(ready)
    assert isinstance(request, ScoreRequest)

    # residuals before scores
    early = EncryptedResiduals("job", request.seq + 5, "fp", -32, 33, (2,))
    with pytest.raises(ProtocolError):
        partner.handle(early)

    scores = partner.handle(request)
    with pytest.raises(ProtocolError):  # the same request again
        partner.handle(request)
    with pytest.raises(ProtocolError):  # another job
        partner.handle(ScoreRequest("other", 99, ScoreKind.TRAIN, 0, request.rows, None))
    with pytest.raises(ProtocolError):  # a second Ready
        brand.handle(ready)
    residuals = brand.handle(scores)
    with pytest.raises(ProtocolError):  # scores replayed when a gradient is expected
        brand.handle(scores)
    assert isinstance(residuals, EncryptedResiduals)
    brand.close()
    partner.close()


def test_partner_refuses_wrong_key_wrong_lengths_and_rows(keys: KeyPair) -> None:
    brand, partner = make_roles(keys)
    announcement = brand.start()
    forged = KeyAnnouncement(
        "job", announcement.n, announcement.h_s, announcement.obfuscator_bits, "0" * 32, 50, 10
    )
    with pytest.raises(ProtocolError):
        partner.handle(forged)
    partner.handle(announcement)
    with pytest.raises(ProtocolError):
        partner.handle(
            ScoreRequest("job", 1, ScoreKind.TRAIN, 0, np.array([0, 50], dtype=np.int64), None)
        )
    partner.handle(ScoreRequest("job", 2, ScoreKind.TRAIN, 0, np.arange(5, dtype=np.int64), None))
    fp = announcement.fingerprint
    with pytest.raises(ProtocolError):  # 3 residuals for a 5-row batch
        partner.handle(EncryptedResiduals("job", 3, fp, -32, 33, (2, 3, 4)))
    with pytest.raises(ProtocolError):  # under another key
        partner.handle(EncryptedResiduals("job", 4, "f" * 32, -32, 33, (2,) * 5))
    with pytest.raises(ProtocolError):  # a "ciphertext" outside (0, n²)
        partner.handle(EncryptedResiduals("job", 5, fp, -32, 33, (0,) * 5))
    with pytest.raises(ProtocolError):  # an update with no outstanding gradient... wrong stage
        partner.handle(
            ScoreRequest(
                "job",
                6,
                ScoreKind.VALID,
                0,
                np.arange(3, dtype=np.int64),
                GradientUpdate(1, 0, (1, 2, 3)),
            )
        )
    partner.close()
    brand.close()


def test_wire_round_trip_and_malformed_input(keys: KeyPair) -> None:
    request = ScoreRequest(
        "job",
        7,
        ScoreKind.VALID,
        2,
        np.arange(4, dtype=np.int64),
        GradientUpdate(6, -40, (-(1 << 90), 5, 0)),
        snapshot=True,
    )
    back = from_wire(to_wire(request))
    assert isinstance(back, ScoreRequest)
    assert back.update is not None and back.update.values == (-(1 << 90), 5, 0)
    assert back.kind is ScoreKind.VALID and back.snapshot and back.epoch == 2
    np.testing.assert_array_equal(back.rows, request.rows)
    scores = PartialScores("job", 3, np.array([0.25, -1.5]))
    np.testing.assert_array_equal(from_wire(to_wire(scores)).scores, [0.25, -1.5])  # type: ignore[union-attr]
    data = to_wire(scores)
    for bad in (
        b"",
        b"garbage",
        data[:-1],
        data + b"x",
        data.replace(b"PartialScores", b"Nope12345678x"),
    ):
        with pytest.raises(WireFormatError):
            from_wire(bad)


def test_metrics_on_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert ks_statistic(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.1, 0.2])


@pytest.mark.integration
def test_brand_with_worker_processes_pipelines_obfuscators(keys: KeyPair) -> None:
    rng = np.random.default_rng(1)
    xb, xp = rng.normal(size=(40, 2)), rng.normal(size=(40, 2))
    y = (xb[:, 0] - xp[:, 1] > 0).astype(float)
    config = TrainingConfig(epochs=1, batch_size=15, workers=2)
    brand = BrandTrainer("job", keys, xb[:30], y[:30], xb[30:], y[30:], config)
    partner = PartnerTrainer("job", xp[:30], xp[30:], PartnerConfig(min_key_bits=512))
    run_in_process(brand, partner)
    assert brand.stage is BrandStage.DONE
    assert len(brand.history) == 1


def test_partner_refuses_keys_below_its_minimum(keys: KeyPair) -> None:
    brand, _ = make_roles(keys)
    strict = PartnerTrainer("job", np.zeros((50, 3)), np.zeros((10, 3)))  # default: 2048 bits
    with pytest.raises(ProtocolError):
        strict.handle(brand.start())
    brand.close()
