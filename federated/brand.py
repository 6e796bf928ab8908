"""The brand's role: labels, its own features and the job's Paillier key pair.

A state machine with no I/O: :meth:`BrandTrainer.start` produces the first message and
:meth:`BrandTrainer.handle` turns each partner reply into the next request (``None`` when the job
is done). The brand never sees the partner's features, weights or unmasked gradients: it receives
partial scores and decrypts only masked, packed gradient sums. It never logs labels or keys.
"""

from __future__ import annotations

import enum
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
from federated.metrics import log_loss, roc_auc
from federated.model import LinearPart, OptimizerConfig
from pec.paillier import (
    KeyPair,
    PackedCiphertexts,
    PaillierEngine,
    PaillierError,
    SlotLayout,
)

RESIDUAL_FRAC_BITS = 32
"""Fixed-point precision of the encrypted residuals (2^-32)."""


class BrandStage(enum.Enum):
    """Where the brand is in the job."""

    NEW = "new"
    AWAIT_READY = "await_ready"
    AWAIT_SCORES = "await_scores"
    AWAIT_GRADIENT = "await_gradient"
    AWAIT_VALID_SCORES = "await_valid_scores"
    AWAIT_FINISHED = "await_finished"
    DONE = "done"


@dataclass(frozen=True)
class TrainingConfig:
    """The brand's training settings for one job."""

    epochs: int = 10
    batch_size: int = 8192
    """Rows per step; 0 means two steps per epoch (half the training rows each)."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    positive_weight: float = 1.0
    patience: int = 3
    seed: int = 0
    workers: int = 1
    stop_on: str = "loss"
    """Early-stopping criterion on the validation split: ``loss`` (log-loss) or ``auc``."""
    merge_validation: bool = True
    """Fold each epoch's validation scores into the next epoch's first request (one round trip
    fewer per epoch)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 0 or self.patience < 1:
            raise ValueError("epochs and patience must be >= 1, batch_size >= 0")
        if self.stop_on not in ("loss", "auc"):
            raise ValueError("stop_on must be 'loss' or 'auc'")
        if self.positive_weight <= 0:
            raise ValueError("positive_weight must be > 0")


@dataclass
class EpochRecord:
    """Validation metrics after one epoch."""

    epoch: int
    valid_auc: float
    valid_loss: float


class BrandTrainer:
    """The brand's side of one training job (single use).

    Args:
        job_id: the approved job.
        keys: the job's fresh Paillier key pair.
        train_features, train_labels: the brand's aligned training rows and 0/1 labels.
        valid_features, valid_labels: the brand's aligned validation rows (early stopping).
        config: training settings.

    Raises:
        ValueError: shapes do not match or labels are not 0/1.
    """

    def __init__(
        self,
        job_id: str,
        keys: KeyPair,
        train_features: npt.ArrayLike,
        train_labels: npt.ArrayLike,
        valid_features: npt.ArrayLike,
        valid_labels: npt.ArrayLike,
        config: TrainingConfig | None = None,
    ) -> None:
        self.job_id = job_id
        self.config = config or TrainingConfig()
        self._x = np.asarray(train_features, dtype=np.float64)
        self._y = np.asarray(train_labels, dtype=np.float64)
        self._xv = np.asarray(valid_features, dtype=np.float64)
        self._yv = np.asarray(valid_labels, dtype=np.float64)
        if self._x.ndim != 2 or self._xv.ndim != 2 or self._x.shape[1] != self._xv.shape[1]:
            raise ValueError("feature matrices must be 2-D with the same columns")
        if len(self._y) != len(self._x) or len(self._yv) != len(self._xv):
            raise ValueError("labels and features have different row counts")
        for y in (self._y, self._yv):
            if not np.all((y == 0) | (y == 1)):
                raise ValueError("labels must be 0 or 1")
        self._keys = keys
        self._engine = PaillierEngine(
            keys.public_key, keys.private_key, workers=self.config.workers
        )
        self._model = LinearPart(self._x.shape[1], intercept=True, config=self.config.optimizer)
        self._rng = np.random.default_rng(self.config.seed)
        self.stage = BrandStage.NEW
        self._seq = 0
        self._epoch = 0
        self._batches: list[npt.NDArray[np.int64]] = []
        self._batch_index = 0
        self._pending: GradientUpdate | None = None
        self._residual_seq = -1
        self._valid_epoch = -1
        self.history: list[EpochRecord] = []
        self.best_epoch = -1
        self._best_snapshot: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
        self._best: tuple[float, float] = (float("inf"), float("inf"))

    # -- public surface -------------------------------------------------------------------------

    @property
    def weights(self) -> tuple[npt.NDArray[np.float64], float]:
        """The brand's weights and intercept (its part of the model)."""
        w, b = self._model.snapshot()
        return w, float(b[0])

    def brand_scores(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The brand's partial scores (intercept included) for its rows."""
        return self._model.scores(np.asarray(features, dtype=np.float64))

    def close(self) -> None:
        """Stop the engine's worker processes."""
        self._engine.close()

    def start(self) -> KeyAnnouncement:
        """The first message: the job's public key and row counts.

        Raises:
            RoleFinishedError: the role was already started.
        """
        if self.stage is not BrandStage.NEW:
            raise RoleFinishedError("this brand role was already started")
        key = self._keys.public_key
        self.stage = BrandStage.AWAIT_READY
        return KeyAnnouncement(
            job_id=self.job_id,
            n=key.n,
            h_s=key.h_s,
            obfuscator_bits=key.obfuscator_bits,
            fingerprint=key.fingerprint,
            train_rows=len(self._x),
            valid_rows=len(self._xv),
        )

    def handle(self, reply: Message) -> Message | None:
        """Process one partner reply and return the next request, or ``None`` when done.

        Raises:
            ProtocolError: wrong job, stage, sequence number, shape or key.
            RoleFinishedError: the job already finished.
        """
        if self.stage is BrandStage.DONE:
            raise RoleFinishedError("this brand role has finished its job")
        if getattr(reply, "job_id", None) != self.job_id:
            raise ProtocolError("reply for another job")
        if isinstance(reply, Ready):
            return self._on_ready(reply)
        if getattr(reply, "seq", None) != self._seq:
            raise ProtocolError("reply does not answer the last request")
        if isinstance(reply, PartialScores) and self.stage is BrandStage.AWAIT_SCORES:
            return self._on_train_scores(reply)
        if isinstance(reply, PartialScores) and self.stage is BrandStage.AWAIT_VALID_SCORES:
            return self._on_valid_scores(reply)
        if isinstance(reply, MaskedGradient) and self.stage is BrandStage.AWAIT_GRADIENT:
            return self._on_gradient(reply)
        if isinstance(reply, Finished) and self.stage is BrandStage.AWAIT_FINISHED:
            self.stage = BrandStage.DONE
            self.close()
            return None
        raise ProtocolError(f"unexpected {type(reply).__name__} in stage {self.stage.value}")

    # -- schedule -------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _on_ready(self, reply: Ready) -> Message:
        if self.stage is not BrandStage.AWAIT_READY:
            raise ProtocolError("unexpected Ready")
        if reply.train_rows != len(self._x) or reply.valid_rows != len(self._xv):
            raise ProtocolError("the partner's row counts differ")
        return self._start_epoch()

    def _start_epoch(self) -> Message:
        order = self._rng.permutation(len(self._x)).astype(np.int64)
        size = self.config.batch_size or max(1, -(-len(self._x) // 2))  # 0: two steps
        self._batches = [np.sort(order[i : i + size]) for i in range(0, len(order), size)]
        self._batch_index = 0
        return self._request_batch()

    def _request_batch(self) -> ScoreRequest:
        update, self._pending = self._pending, None
        self.stage = BrandStage.AWAIT_SCORES
        return ScoreRequest(
            job_id=self.job_id,
            seq=self._next_seq(),
            kind=ScoreKind.TRAIN,
            epoch=self._epoch,
            rows=self._batches[self._batch_index],
            update=update,
            valid_epoch=self._valid_epoch if self._batch_index == 0 else -1,
        )

    def _on_train_scores(self, reply: PartialScores) -> EncryptedResiduals | Finish:
        if self._valid_epoch >= 0:
            # the previous epoch's validation rode on this request: evaluate it first
            if reply.valid_scores is None:
                raise ProtocolError("validation scores are missing")
            epoch, self._valid_epoch = self._valid_epoch, -1
            if self._record_validation(epoch, reply.valid_scores):
                return self._finish()
        rows = self._batches[self._batch_index]
        if reply.scores.shape != (len(rows),) or not np.all(np.isfinite(reply.scores)):
            raise ProtocolError("partial scores have the wrong shape or are not finite")
        x, y = self._x[rows], self._y[rows]
        z = self._model.scores(x) + reply.scores
        p = 1.0 / (1.0 + np.exp(-z))
        weight = np.where(y == 1, self.config.positive_weight, 1.0)
        residual = weight * (p - y)
        self._model.step(x.T @ residual / len(rows), float(residual.sum() / len(rows)))
        encrypted = self._engine.encrypt(residual, frac_bits=RESIDUAL_FRAC_BITS)
        if self._engine.workers > 1:
            # while the partner computes X^T·[[e]], the brand's workers prepare the obfuscators
            # of the next batch (with worker processes this returns at once)
            nxt = self._batch_index + 1
            upcoming = len(self._batches[nxt]) if nxt < len(self._batches) else len(rows)
            self._engine.precompute_async(upcoming)
        self.stage = BrandStage.AWAIT_GRADIENT
        self._residual_seq = self._next_seq()
        return EncryptedResiduals(
            job_id=self.job_id,
            seq=self._residual_seq,
            fingerprint=self._keys.public_key.fingerprint,
            exponent=encrypted.exponent,
            bound_bits=encrypted.bound_bits,
            ciphertexts=encrypted.to_ints(),
        )

    def _on_gradient(self, reply: MaskedGradient) -> Message:
        if reply.fingerprint != self._keys.public_key.fingerprint:
            raise ProtocolError("gradient under another key")
        try:
            packed = PackedCiphertexts.from_ints(
                self._keys.public_key,
                reply.ciphertexts,
                SlotLayout(value_bits=reply.value_bits),
                reply.count,
                reply.exponent,
            )
            decrypted = self._engine.decrypt_packed(packed)
        except (PaillierError, ValueError) as exc:
            raise ProtocolError("the masked gradient could not be decrypted") from exc
        self._pending = GradientUpdate(
            seq=self._residual_seq, exponent=decrypted.exponent, values=decrypted.ints
        )
        self._batch_index += 1
        if self._batch_index < len(self._batches):
            return self._request_batch()
        if self.config.merge_validation and self._epoch + 1 < self.config.epochs:
            self._valid_epoch = self._epoch
            self._epoch += 1
            return self._start_epoch()
        update, self._pending = self._pending, None
        self.stage = BrandStage.AWAIT_VALID_SCORES
        return ScoreRequest(
            job_id=self.job_id,
            seq=self._next_seq(),
            kind=ScoreKind.VALID,
            epoch=self._epoch,
            rows=np.arange(len(self._xv), dtype=np.int64),
            update=update,
            snapshot=True,
        )

    def _on_valid_scores(self, reply: PartialScores) -> Message:
        epoch = self._epoch
        self._epoch += 1
        if self._record_validation(epoch, reply.scores) or self._epoch >= self.config.epochs:
            return self._finish()
        return self._start_epoch()

    def _record_validation(self, epoch: int, partner_scores: npt.NDArray[np.float64]) -> bool:
        """Record the validation metrics of ``epoch``; True when training should stop."""
        if partner_scores.shape != (len(self._xv),) or not np.all(np.isfinite(partner_scores)):
            raise ProtocolError("partial scores have the wrong shape or are not finite")
        z = self._model.scores(self._xv) + partner_scores
        p = 1.0 / (1.0 + np.exp(-z))
        loss = log_loss(self._yv, p)
        auc = roc_auc(self._yv, p)
        self.history.append(EpochRecord(epoch, auc, loss))
        # early stopping on the validation log-loss (smoother than AUC on a small holdout) or,
        # for few large steps with momentum (where the loss can wobble while the ranking still
        # improves), on the validation AUC with the loss breaking ties (a small validation split
        # can rank perfectly after one epoch: the better-fitted later epoch should then win)
        criterion = (loss, 0.0) if self.config.stop_on == "loss" else (-round(auc, 12), loss)
        if criterion < self._best:
            self._best = criterion
            self.best_epoch = epoch
            self._best_snapshot = self._model.snapshot()
        return epoch - self.best_epoch >= self.config.patience

    def _finish(self) -> Finish:
        if self._best_snapshot is not None:
            self._model.restore(self._best_snapshot)
        self.stage = BrandStage.AWAIT_FINISHED
        return Finish(
            job_id=self.job_id, seq=self._next_seq(), update=None, best_epoch=self.best_epoch
        )
