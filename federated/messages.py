"""The cross-party messages of vertical federated logistic regression.

Plain frozen dataclasses: what each one carries is exactly what the other party learns. The brand
(key holder, labels) sends requests; the partner (features, its own weights) answers, so the brand
can run as a Flower ServerApp and the partner behind a ClientApp relay. Per training batch there
are two round trips:

    brand -> partner  ScoreRequest(rows, update for the previous batch)   partner applies update
    partner -> brand  PartialScores(X_P[rows]·w_P)                         (visible: partial scores)
    brand -> partner  EncryptedResiduals([[e]])                            (ciphertexts only)
    partner -> brand  MaskedGradient(pack([[X_P^T·e + mask]]))             (statistically masked)

and the next ScoreRequest carries the decrypted masked gradient back. Serialization lives in
:mod:`federated.wire`; these objects do not serialize themselves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


class ScoreKind(enum.Enum):
    """Why the brand asks for partial scores."""

    TRAIN = "train"
    VALID = "valid"


@dataclass(frozen=True, eq=False)
class KeyAnnouncement:
    """Brand -> partner: the job's Paillier public key and the training schedule's shape."""

    job_id: str
    n: int
    h_s: int
    obfuscator_bits: int
    fingerprint: str
    train_rows: int
    valid_rows: int


@dataclass(frozen=True, eq=False)
class Ready:
    """Partner -> brand: the partner holds matching row counts and is ready."""

    job_id: str
    train_rows: int
    valid_rows: int


@dataclass(frozen=True, eq=False)
class GradientUpdate:
    """Decrypted masked gradient entries (the partner removes its masks)."""

    seq: int
    exponent: int
    values: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class ScoreRequest:
    """Brand -> partner: score ``rows`` (positions in the aligned split) with current weights.

    ``update`` (if any) is applied first; ``snapshot`` asks the partner to remember its weights
    under ``epoch`` (for early stopping). ``valid_epoch >= 0`` (on a training request) folds the
    end of the previous epoch into this round trip: after the update the partner remembers its
    weights under ``valid_epoch`` and also returns the validation rows' partial scores.
    """

    job_id: str
    seq: int
    kind: ScoreKind
    epoch: int
    rows: npt.NDArray[np.int64]
    update: GradientUpdate | None
    snapshot: bool = False
    valid_epoch: int = -1


@dataclass(frozen=True, eq=False)
class PartialScores:
    """Partner -> brand: ``X_P[rows]·w_P`` for the requested rows (and the validation rows')."""

    job_id: str
    seq: int
    scores: npt.NDArray[np.float64]
    valid_scores: npt.NDArray[np.float64] | None = None


@dataclass(frozen=True, eq=False)
class EncryptedResiduals:
    """Brand -> partner: ``[[e_i]]`` with ``e_i = class_weight_i·(σ(z_i) − y_i)`` for the batch."""

    job_id: str
    seq: int
    fingerprint: str
    exponent: int
    bound_bits: int
    ciphertexts: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class MaskedGradient:
    """Partner -> brand: packed, re-randomized ``[[Σ_i x_ij·e_i + m_j]]``."""

    job_id: str
    seq: int
    fingerprint: str
    exponent: int
    value_bits: int
    count: int
    ciphertexts: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Finish:
    """Brand -> partner: apply ``update``, restore the weights of ``best_epoch``, stop."""

    job_id: str
    seq: int
    update: GradientUpdate | None
    best_epoch: int


@dataclass(frozen=True, eq=False)
class Finished:
    """Partner -> brand: done; the partner keeps its part of the model."""

    job_id: str
    seq: int


Message = (
    KeyAnnouncement
    | Ready
    | ScoreRequest
    | PartialScores
    | EncryptedResiduals
    | MaskedGradient
    | Finish
    | Finished
)
