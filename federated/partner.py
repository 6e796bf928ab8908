"""The data partner's role: features and its own weights, never labels or plaintext residuals.

A state machine with no I/O: :meth:`PartnerTrainer.handle` turns one message from the brand into
one reply. The partner only ever sees the brand's public key, row positions, ciphertexts and its
own masked gradient after the brand decrypted it. Its feature values and weights never leave it:
it sends partial scores (a documented leak, see docs/vfl.md) and a re-randomized, packed
encryption of ``X^T·e + mask``. It never logs feature values, weights or masks.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from federated.errors import ProtocolError, RoleFinishedError
from federated.messages import (
    EncryptedResiduals,
    Finish,
    Finished,
    GradientUpdate,
    KeyAnnouncement,
    MaskedGradient,
    Message,
    PartialScores,
    Ready,
    ScoreKind,
    ScoreRequest,
)
from federated.model import LinearPart, OptimizerConfig
from pec.paillier import (
    DEFAULT_FEATURE_BITS,
    DEFAULT_KEY_BITS,
    EncodedMatrix,
    EncryptedVector,
    PaillierEngine,
    PaillierError,
    PublicKey,
    SlotLayout,
    encode_int_vector,
    encode_matrix,
)

MASK_STATISTICAL_BITS = 64
"""Masks exceed the gradient's bound by this many bits: statistical distance <= 2^-64."""

MAX_RESIDUAL_BOUND_BITS = 64
"""Largest residual magnitude (bits) the partner accepts; larger claims are refused."""


class PartnerStage(enum.Enum):
    """Where the partner is in the job."""

    AWAIT_KEY = "await_key"
    IDLE = "idle"
    SCORED = "scored"
    GRADIENT_SENT = "gradient_sent"
    FINISHED = "finished"


@dataclass(frozen=True)
class PartnerConfig:
    """The partner's own settings (its policy decides them, not the brand)."""

    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    feature_bits: int = DEFAULT_FEATURE_BITS
    mask_bits: int = MASK_STATISTICAL_BITS
    workers: int = 1
    min_batch_rows: int = 1
    min_key_bits: int = DEFAULT_KEY_BITS
    """Smallest Paillier modulus the partner accepts from a brand (tests lower it for speed)."""
    min_aligned_rows: int = 0
    """Fewest aligned (shared) rows the partner trains on: its policy's minimum overlap."""


class PartnerTrainer:
    """The partner's side of one training job (single use).

    Args:
        job_id: the approved job this role serves.
        train_features: the partner's aligned training rows (rows × features).
        valid_features: the partner's aligned validation rows.
        config: the partner's settings.

    Raises:
        ValueError: the feature matrices are not 2-D with the same number of columns.
    """

    def __init__(
        self,
        job_id: str,
        train_features: npt.ArrayLike,
        valid_features: npt.ArrayLike,
        config: PartnerConfig | None = None,
    ) -> None:
        x_train = np.asarray(train_features, dtype=np.float64)
        x_valid = np.asarray(valid_features, dtype=np.float64)
        if x_train.ndim != 2 or x_valid.ndim != 2 or x_train.shape[1] != x_valid.shape[1]:
            raise ValueError("feature matrices must be 2-D with the same columns")
        self.job_id = job_id
        self.config = config or PartnerConfig()
        self._x_train = x_train
        self._x_valid = x_valid
        self._x_encoded: EncodedMatrix = encode_matrix(x_train, self.config.feature_bits)
        self._model = LinearPart(x_train.shape[1], intercept=False, config=self.config.optimizer)
        self.stage = PartnerStage.AWAIT_KEY
        self._engine: PaillierEngine | None = None
        self._last_seq = -1
        self._batch_rows: npt.NDArray[np.int64] | None = None
        self._masks: list[int] = []
        self._gradient_seq = -1
        self._snapshots: dict[int, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}

    # -- public surface -------------------------------------------------------------------------

    @property
    def weights(self) -> npt.NDArray[np.float64]:
        """The partner's weights (its part of the model; stays with the partner)."""
        return self._model.snapshot()[0]

    def score(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Partial scores of new rows with the trained weights (batch scoring)."""
        return self._model.scores(np.asarray(features, dtype=np.float64))

    def close(self) -> None:
        """Stop the engine's worker processes."""
        if self._engine is not None:
            self._engine.close()

    def handle(self, message: Message) -> Message:
        """Process one message from the brand and return the reply.

        Raises:
            ProtocolError: wrong job, stage, sequence number, shape or key.
            RoleFinishedError: the job already finished.
        """
        if self.stage is PartnerStage.FINISHED:
            raise RoleFinishedError("this partner role has finished its job")
        if getattr(message, "job_id", None) != self.job_id:
            raise ProtocolError("message for another job")
        seq = getattr(message, "seq", None)
        if seq is not None and seq <= self._last_seq:
            raise ProtocolError(f"sequence number {seq} repeated or out of order")
        reply = self._dispatch(message)
        if seq is not None:  # only accepted messages advance the sequence
            self._last_seq = seq
        return reply

    def _dispatch(self, message: Message) -> Message:
        if isinstance(message, KeyAnnouncement):
            return self._on_key(message)
        if isinstance(message, ScoreRequest):
            return self._on_score_request(message)
        if isinstance(message, EncryptedResiduals):
            return self._on_residuals(message)
        if isinstance(message, Finish):
            return self._on_finish(message)
        raise ProtocolError(f"the partner does not accept {type(message).__name__}")

    # -- handlers -------------------------------------------------------------------------------

    def _expect(self, *stages: PartnerStage) -> None:
        if self.stage not in stages:
            raise ProtocolError(f"unexpected message in stage {self.stage.value}")

    def _on_key(self, msg: KeyAnnouncement) -> Ready:
        self._expect(PartnerStage.AWAIT_KEY)
        key = PublicKey(n=msg.n, h_s=msg.h_s, obfuscator_bits=msg.obfuscator_bits)
        if key.fingerprint != msg.fingerprint:
            raise ProtocolError("the announced key does not match its fingerprint")
        if key.key_bits < self.config.min_key_bits:
            raise ProtocolError(f"a {key.key_bits}-bit key is below the partner's minimum")
        if msg.train_rows != len(self._x_train) or msg.valid_rows != len(self._x_valid):
            raise ProtocolError("row counts differ from the partner's aligned data")
        self._engine = PaillierEngine(key, workers=self.config.workers)
        self.stage = PartnerStage.IDLE
        return Ready(
            job_id=self.job_id, train_rows=len(self._x_train), valid_rows=len(self._x_valid)
        )

    def _apply_update(self, update: GradientUpdate | None) -> None:
        if self.stage is PartnerStage.GRADIENT_SENT:
            if update is None or update.seq != self._gradient_seq:
                raise ProtocolError("the update for the outstanding gradient is missing")
            if len(update.values) != len(self._masks) or self._batch_rows is None:
                raise ProtocolError("the update has the wrong length")
            grad_ints = [v - m for v, m in zip(update.values, self._masks, strict=True)]
            grad = np.array([float(g) for g in grad_ints]) * 2.0**update.exponent
            self._model.step(grad / len(self._batch_rows))
            self._masks = []
            self._batch_rows = None
        elif update is not None:
            raise ProtocolError("an update arrived but no gradient is outstanding")

    def _rows(self, rows: npt.NDArray[np.int64], limit: int) -> npt.NDArray[np.int64]:
        r = np.asarray(rows, dtype=np.int64)
        if r.ndim != 1 or r.size == 0 or r.min() < 0 or r.max() >= limit:
            raise ProtocolError("row positions out of range")
        return r

    def _on_score_request(self, msg: ScoreRequest) -> PartialScores:
        self._expect(PartnerStage.IDLE, PartnerStage.GRADIENT_SENT)
        train = msg.kind is ScoreKind.TRAIN
        rows = self._rows(msg.rows, len(self._x_train) if train else len(self._x_valid))
        if train and rows.size < self.config.min_batch_rows:
            raise ProtocolError("batch smaller than the partner's minimum")
        if msg.valid_epoch >= 0 and not train:
            raise ProtocolError("validation rides only on a training request")
        self._apply_update(msg.update)  # all checks passed: now change state
        if msg.snapshot:
            self._snapshots[msg.epoch] = self._model.snapshot()
        valid_scores = None
        if msg.valid_epoch >= 0:
            self._snapshots[msg.valid_epoch] = self._model.snapshot()
            valid_scores = self._model.scores(self._x_valid)
        if train:
            scores = self._model.scores(self._x_train[rows])
            self._batch_rows = rows
            self.stage = PartnerStage.SCORED
        else:
            scores = self._model.scores(self._x_valid[rows])
            self.stage = PartnerStage.IDLE
        return PartialScores(
            job_id=self.job_id, seq=msg.seq, scores=scores, valid_scores=valid_scores
        )

    def _on_residuals(self, msg: EncryptedResiduals) -> MaskedGradient:
        self._expect(PartnerStage.SCORED)
        engine = self._engine
        rows = self._batch_rows
        if engine is None or rows is None:
            raise ProtocolError("no batch is waiting for residuals")
        if msg.fingerprint != engine.public_key.fingerprint:
            raise ProtocolError("residuals under another key")
        if len(msg.ciphertexts) != len(rows):
            raise ProtocolError("residuals do not match the batch size")
        if not 0 <= msg.bound_bits <= MAX_RESIDUAL_BOUND_BITS:
            raise ProtocolError("residual bound out of the accepted range")
        try:
            residuals = EncryptedVector.from_ints(
                engine.public_key, msg.ciphertexts, msg.exponent, msg.bound_bits
            )
            x = self._x_encoded
            batch = EncodedMatrix(x.ints[rows], x.exponent, x.bound_bits)
            gradient = engine.transpose_dot(batch, residuals)
            mask_bits = gradient.bound_bits + self.config.mask_bits
            masks = [
                secrets.randbelow(1 << (mask_bits + 1)) - (1 << mask_bits)
                for _ in range(len(gradient))
            ]
            masked = gradient.add_plain(encode_int_vector(masks, gradient.exponent))
            layout = SlotLayout(value_bits=masked.bound_bits + 1)
            packed = engine.pack(masked, layout)
        except PaillierError as exc:
            raise ProtocolError("residuals could not be processed") from exc
        self._masks = masks
        self._gradient_seq = msg.seq
        self.stage = PartnerStage.GRADIENT_SENT
        return MaskedGradient(
            job_id=self.job_id,
            seq=msg.seq,
            fingerprint=engine.public_key.fingerprint,
            exponent=packed.exponent,
            value_bits=layout.value_bits,
            count=packed.count,
            ciphertexts=packed.to_ints(),
        )

    def _on_finish(self, msg: Finish) -> Finished:
        # SCORED: the brand stopped early on validation scores that rode on a training request
        self._expect(PartnerStage.IDLE, PartnerStage.GRADIENT_SENT, PartnerStage.SCORED)
        self._apply_update(msg.update)
        if msg.best_epoch in self._snapshots:
            self._model.restore(self._snapshots[msg.best_epoch])
        self._snapshots.clear()
        self.stage = PartnerStage.FINISHED
        self.close()
        return Finished(job_id=self.job_id, seq=msg.seq)
