"""A whole VFL job between a brand and one partner: align rows by PSI, train, evaluate, score.

This composes the protocol pieces into the job that ``pec vfl local`` and the nodes run, still
without I/O: the brand's side is a driver that calls an ``exchange(request) -> reply`` function
once per round trip (a Flower message in deployment, a direct call in tests); the partner's side is
a responder whose :meth:`PartnerJob.answer` turns each request into the reply. Every request is a
small envelope (:func:`pack` / :func:`unpack`) around the bytes of one of the underlying
protocols:

======  =====================================  ==============================================
op      brand -> partner                       partner -> brand
======  =====================================  ==============================================
psi     PSI frames aligning the training rows  PSI frames (both sides learn their own matched
        (``set=train``) or the test rows       rows and a shared pseudonymous match id; rows
        (``set=test``)                         are aligned by sorting on it)
plan    the split of the aligned rows into     the partner's feature names and aligned rows
        train / valid / holdout positions
        (random, independent of the labels)
        and the number of models (labels)
vfl     one :mod:`federated.wire` message of   the partner trainer's reply
        model ``m``
score   ``set=holdout`` or ``set=test``;       partial scores ``X_P·w_P`` of those rows, one
        ``final`` ends the job                 row per model
======  =====================================  ==============================================

Round trips of a job: 2 (PSI) + 1 (plan) + per model (2 + 2·batches + 1 per epoch) + 2 (test PSI,
if test tables are given) + 1 (scores).
"""

from __future__ import annotations

import enum
import json
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from federated.brand import BrandTrainer, EpochRecord, TrainingConfig
from federated.errors import ProtocolError, WireFormatError
from federated.evaluation import Evaluation, evaluate
from federated.messages import Message
from federated.partner import PartnerConfig, PartnerTrainer
from federated.wire import from_wire, to_wire
from pec.errors import InputError
from pec.paillier import KeyPair
from psi.batch import BatchEngine, InlineEngine, PoolEngine
from psi.normalize import KeyKind, NormalizationRules
from psi.prepare import prepare_input
from psi.protocol import PsiConfig, PsiParty, PsiResult, Reveal
from psi.rounds import PsiResponder, drive_rounds
from psi.wire import Role

__all__ = [
    "AUTO_BATCH",
    "BrandJobResult",
    "JobOptions",
    "ModelResult",
    "PartnerJob",
    "PartyTable",
    "Standardizer",
    "pack",
    "run_brand_job",
    "unpack",
]

MAGIC = b"PECVFLJOB1\n"
MAX_HEADER = 1 << 16
AUTO_BATCH = 0
"""``TrainingConfig.batch_size`` placeholder: two steps per epoch (half the training rows each).

Every step costs two round trips of seconds each over Flower, and the Paillier work per epoch is
the same whatever the batch size, so few large steps are cheapest. On default_credit (pooled
simulation, 3 seeds) Nesterov with step 1.0 and momentum 0.7 on two half-batches came within 0.003
AUC of scikit-learn by the 4th epoch; one full batch oscillated and Adam needed many more steps.
"""
POOL_THRESHOLD = 20_000
"""Tables at least this large align with a worker pool; smaller ones inline."""

Exchange = Callable[[bytes], bytes]
Progress = Callable[[str, int, int], None]


# -- envelope --------------------------------------------------------------------------------------


def pack(op: str, header: Mapping[str, Any] | None = None, payload: bytes = b"") -> bytes:
    """One job message: magic, header length, JSON header (with ``op``), payload bytes."""
    head = json.dumps({"op": op, **(header or {})}, separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + payload


def unpack(data: bytes) -> tuple[str, dict[str, Any], bytes]:
    """Split a job message into ``(op, header, payload)``.

    Raises:
        WireFormatError: not a job message, or a malformed header.
    """
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise WireFormatError("not a PEC VFL job message")
    (size,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if size > MAX_HEADER or start + size > len(data):
        raise WireFormatError("job message header is truncated or oversized")
    try:
        header = json.loads(data[start : start + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError("job message header is not JSON") from exc
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise WireFormatError("job message header has no op")
    return str(header.pop("op")), header, data[start + size :]


def _ints(values: npt.NDArray[np.int64]) -> bytes:
    return np.ascontiguousarray(values, dtype="<i8").tobytes()


def _floats(values: npt.NDArray[np.float64]) -> bytes:
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def _split_arrays(payload: bytes, sizes: Sequence[int], dtype: str) -> list[npt.NDArray[Any]]:
    width = np.dtype(dtype).itemsize
    if any(not isinstance(s, int) or s < 0 for s in sizes) or sum(sizes) * width != len(payload):
        raise ProtocolError("array sizes do not match the payload")
    out, offset = [], 0
    for size in sizes:
        out.append(np.frombuffer(payload, dtype=dtype, count=size, offset=offset).copy())
        offset += size * width
    return out


# -- the parties' own data -------------------------------------------------------------------------


@dataclass(frozen=True)
class PartyTable:
    """One party's rows for a job: identifiers, a numeric feature matrix, optional labels."""

    ids: pd.Series
    features: npt.NDArray[np.float64]
    feature_names: tuple[str, ...]
    labels: Mapping[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    id_kind: str = "raw"
    """How the ids are normalized for alignment: raw, phone or email (both sides must agree:
    the PSI handshake checks it)."""

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape != (
            len(self.ids),
            len(self.feature_names),
        ):
            raise ValueError("features must be rows x feature_names")
        for name, y in self.labels.items():
            if y.shape != (len(self.ids),):
                raise ValueError(f"label {name} has the wrong length")


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and scale learned on a party's own training rows (kept by that party)."""

    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]

    @classmethod
    def fit(cls, x: npt.NDArray[np.float64]) -> Standardizer:
        """Mean and standard deviation per column; constant columns get scale 1."""
        scale = x.std(axis=0) if len(x) else np.ones(x.shape[1])
        return cls(
            x.mean(axis=0) if len(x) else np.zeros(x.shape[1]), np.where(scale > 0, scale, 1.0)
        )

    def apply(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Standardized copy of ``x``."""
        return (x - self.mean) / self.scale


def _align_party(
    job_id: str, role: Role, ids: pd.Series, workers: int, kind: str = "raw", pool: bool = False
) -> tuple[PsiParty, BatchEngine]:
    rules = NormalizationRules()
    key_kind = KeyKind(kind)
    data, _ = prepare_input([ids.astype(str)], (key_kind,), rules)
    large = pool or len(ids) >= POOL_THRESHOLD
    engine: BatchEngine = PoolEngine(workers) if large else InlineEngine()
    config = PsiConfig(
        run_id=job_id,
        reveal=Reveal.BOTH,
        kinds=(key_kind.value,),
        rules=rules.version((key_kind,)),
        align=True,
    )
    return PsiParty(role, config, data, engine=engine), engine


def aligned_rows(result: PsiResult) -> npt.NDArray[np.int64]:
    """The matched rows in the order both sides share: sorted by the match id."""
    if result.matched_rows is None or result.match_ids is None:
        raise ProtocolError("the alignment PSI did not reveal rows and match ids")
    rows = [int(r) for r in result.matched_rows]
    rows.sort(key=lambda r: result.match_ids[r])  # type: ignore[index]
    return np.asarray(rows, dtype=np.int64)


# -- partner ---------------------------------------------------------------------------------------


class PartnerJobStage(enum.Enum):
    """Where the partner's side of a job is."""

    ALIGN = "align"
    AWAIT_PLAN = "await_plan"
    TRAINING = "training"
    SCORING = "scoring"
    DONE = "done"


@dataclass
class PartnerModel:
    """What the partner keeps of one trained model: its weights (never sent)."""

    index: int
    weights: npt.NDArray[np.float64]


class PartnerJob:
    """The partner's side of one approved VFL job; lives in the partner's own process.

    Args:
        job_id: the approved job.
        train: the partner's training table (ids and features; no labels).
        test: the partner's rows to score after training (optional).
        config: the partner's own protocol settings.
        workers: worker processes for PSI on large tables.
    """

    def __init__(
        self,
        job_id: str,
        train: PartyTable,
        test: PartyTable | None = None,
        config: PartnerConfig | None = None,
        workers: int = 0,
    ) -> None:
        self.job_id = job_id
        self.train, self.test = train, test
        self.config = config or PartnerConfig()
        self.workers = workers
        self.stage = PartnerJobStage.ALIGN
        self._responder: PsiResponder | None = None
        self._engine: BatchEngine | None = None
        self._set = "train"
        self.rows: npt.NDArray[np.int64] | None = None
        self.test_rows: npt.NDArray[np.int64] | None = None
        self.standardizer: Standardizer | None = None
        self._x: npt.NDArray[np.float64] | None = None
        self._positions: dict[str, npt.NDArray[np.int64]] = {}
        self._models_expected = 0
        self._trainer: PartnerTrainer | None = None
        self.models: list[PartnerModel] = []
        self.started = time.time()

    @property
    def done(self) -> bool:
        """True once the brand ended the job."""
        return self.stage is PartnerJobStage.DONE

    def close(self) -> None:
        """Release worker processes."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._trainer is not None:
            self._trainer.close()

    def answer(self, request: bytes) -> bytes:
        """Turn one brand request into the reply.

        Raises:
            ProtocolError, WireFormatError: the request does not fit the job's state.
        """
        op, header, payload = unpack(request)
        if header.get("job") != self.job_id:
            raise ProtocolError("message for another job")
        if self.stage is PartnerJobStage.DONE:
            raise ProtocolError("the job has ended")
        if op == "psi":
            return pack("psi", {"job": self.job_id}, self._on_psi(str(header.get("set")), payload))
        if op == "plan":
            return self._on_plan(header, payload)
        if op == "vfl":
            return self._on_vfl(header, payload)
        if op == "score":
            return self._on_score(header)
        raise ProtocolError(f"unknown job operation {op!r}")

    def _on_psi(self, which: str, payload: bytes) -> bytes:
        if which == "train" and self.stage is PartnerJobStage.ALIGN:
            table = self.train
        elif which == "test" and self.stage is PartnerJobStage.SCORING and self.test is not None:
            if self.test_rows is not None:
                raise ProtocolError("the test rows are already aligned")
            table = self.test
        else:
            raise ProtocolError(f"unexpected {which} alignment in stage {self.stage.value}")
        if self._responder is None or self._set != which:
            party, self._engine = _align_party(
                f"{self.job_id}:{which}", Role.RIGHT, table.ids, self.workers, table.id_kind
            )
            self._responder, self._set = PsiResponder(party), which
        reply = self._responder.answer(payload)
        party = self._responder.party
        if party.done:
            rows = aligned_rows(party.result())
            if self._engine is not None:
                self._engine.close()
                self._engine = None
            self._responder = None
            if which == "train":
                self.rows = rows
                self.stage = PartnerJobStage.AWAIT_PLAN
            else:
                self.test_rows = rows
        return reply

    def _on_plan(self, header: Mapping[str, Any], payload: bytes) -> bytes:
        if self.stage is not PartnerJobStage.AWAIT_PLAN or self.rows is None:
            raise ProtocolError(f"unexpected plan in stage {self.stage.value}")
        names = ("train", "valid", "holdout")
        sizes = [header.get(n) for n in names]
        models = header.get("models")
        if not isinstance(models, int) or not 1 <= models <= 64:
            raise ProtocolError("the plan names no models or too many")
        parts = _split_arrays(payload, [s if isinstance(s, int) else -1 for s in sizes], "<i8")
        everything = np.concatenate(parts)
        n = len(self.rows)
        if len(everything) != n or not np.array_equal(np.sort(everything), np.arange(n)):
            raise ProtocolError("the plan does not partition the aligned rows")
        if len(parts[0]) < 1 or len(parts[1]) < 1:
            raise ProtocolError("the plan has no training or validation rows")
        if n < self.config.min_aligned_rows:
            raise ProtocolError(
                f"the overlap ({n} rows) is below the partner's minimum "
                f"({self.config.min_aligned_rows})"
            )
        self._positions = dict(zip(names, parts, strict=True))
        x = self.train.features[self.rows]
        self.standardizer = Standardizer.fit(x[self._positions["train"]])
        self._x = self.standardizer.apply(x)
        self._models_expected = models
        self.stage = PartnerJobStage.TRAINING
        info = {"job": self.job_id, "features": list(self.train.feature_names), "rows": n}
        return pack("planned", info)

    def _on_vfl(self, header: Mapping[str, Any], payload: bytes) -> bytes:
        if self.stage is not PartnerJobStage.TRAINING or self._x is None:
            raise ProtocolError(f"unexpected training message in stage {self.stage.value}")
        index = header.get("model")
        if index != len(self.models):
            raise ProtocolError("training message for a model that is not the current one")
        if self._trainer is None:
            self._trainer = PartnerTrainer(
                f"{self.job_id}:m{index}",
                self._x[self._positions["train"]],
                self._x[self._positions["valid"]],
                self.config,
            )
        trainer = self._trainer
        reply = trainer.handle(from_wire(payload))
        if trainer.stage.value == "finished":
            self.models.append(PartnerModel(index, trainer.weights.copy()))
            self._trainer = None
            if len(self.models) == self._models_expected:
                self.stage = PartnerJobStage.SCORING
        return pack("vfl", {"job": self.job_id, "model": index}, to_wire(reply))

    def _on_score(self, header: Mapping[str, Any]) -> bytes:
        if self.stage is not PartnerJobStage.SCORING or self._x is None:
            raise ProtocolError(f"unexpected scoring request in stage {self.stage.value}")
        which = header.get("set")
        if which == "holdout":
            x = self._x[self._positions["holdout"]]
        elif which == "test" and self.test is not None and self.test_rows is not None:
            assert self.standardizer is not None
            x = self.standardizer.apply(self.test.features[self.test_rows])
        else:
            raise ProtocolError(f"cannot score the {which!r} rows")
        scores = np.vstack([x @ m.weights for m in self.models]) if len(x) else np.zeros((0, 0))
        if header.get("final") is True:
            self.stage = PartnerJobStage.DONE
            self.close()
        info = {"job": self.job_id, "models": len(self.models), "rows": len(x)}
        return pack("scores", info, _floats(scores.reshape(-1)))


# -- brand -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobOptions:
    """The brand's settings for one job."""

    key_bits: int = 2048
    seed: int = 0
    holdout_fraction: float = 0.2
    valid_fraction: float = 0.1
    training: TrainingConfig = field(default_factory=TrainingConfig)
    workers: int = 0
    balance_classes: bool = False
    """Class weights per label: positives weigh negatives / positives (imbalanced labels)."""
    pool_alignment: bool = False
    """Align the training rows with a worker pool whatever the size of the brand's own table:
    the brand masks every id the partner sends, so a small seed against a large population
    (a lookalike job) needs the pool as much as the partner does."""

    def __post_init__(self) -> None:
        if not 0 <= self.holdout_fraction < 1 or not 0 < self.valid_fraction < 1:
            raise ValueError("holdout_fraction must be in [0, 1) and valid_fraction in (0, 1)")


@dataclass
class ModelResult:
    """One label's model at the brand: its part of the weights and its evaluation."""

    label: str
    weights: npt.NDArray[np.float64]
    intercept: float
    history: list[EpochRecord]
    best_epoch: int
    epochs: int
    evaluation: Evaluation | None
    scores: npt.NDArray[np.float64]
    """0-1 scores of the scored rows (the matched test rows, or the holdout)."""


@dataclass
class BrandJobResult:
    """Everything the brand learned and keeps from one job."""

    job_id: str
    aligned_rows: int
    train_rows: int
    valid_rows: int
    holdout_rows: int
    test_rows: int
    brand_features: tuple[str, ...]
    partner_features: tuple[str, ...]
    standardizer: Standardizer
    models: list[ModelResult]
    scored_ids: pd.Series
    """Identifiers of the rows the scores belong to (holdout or matched test rows)."""
    evaluated_on: str
    """``test`` (a labeled test table) or ``holdout`` (a random part of the aligned rows)."""
    round_trips: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    key_bits: int
    key_fingerprint: str
    scored_on: str = "holdout"
    """The rows :attr:`ModelResult.scores` and :attr:`scored_ids` belong to: the matched test
    rows when a test table was given (labeled or not), else the holdout."""


class _Counter:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.round_trips = self.sent = self.received = 0

    def __call__(self, request: bytes) -> bytes:
        reply = self.exchange(request)
        self.round_trips += 1
        self.sent += len(request)
        self.received += len(reply)
        return reply


def _expect(reply: bytes, op: str, job_id: str) -> tuple[dict[str, Any], bytes]:
    got, header, payload = unpack(reply)
    if got != op or header.get("job") != job_id:
        raise ProtocolError(f"expected a {op} reply for this job, got {got}")
    return header, payload


def _align(
    job_id: str, which: str, table: PartyTable, exchange: Exchange, workers: int, pool: bool = False
) -> npt.NDArray[np.int64]:
    party, engine = _align_party(
        f"{job_id}:{which}", Role.LEFT, table.ids, workers, table.id_kind, pool
    )
    try:

        def psi_exchange(frames: bytes) -> bytes:
            _, payload = _expect(
                exchange(pack("psi", {"job": job_id, "set": which}, frames)), "psi", job_id
            )
            return payload

        return aligned_rows(drive_rounds(party, psi_exchange))
    finally:
        engine.close()


def _split(n: int, options: JobOptions, has_test: bool) -> dict[str, npt.NDArray[np.int64]]:
    """Random positions (independent of the labels, so the partner learns nothing from them)."""
    order = np.random.default_rng(options.seed).permutation(n).astype(np.int64)
    holdout = 0 if has_test else round(n * options.holdout_fraction)
    rest = order[holdout:]
    valid = max(1, round(len(rest) * options.valid_fraction))
    return {
        "train": np.sort(rest[valid:]),
        "valid": np.sort(rest[:valid]),
        "holdout": np.sort(order[:holdout]),
    }


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def run_brand_job(
    job_id: str,
    train: PartyTable,
    exchange: Exchange,
    options: JobOptions | None = None,
    *,
    test: PartyTable | None = None,
    progress: Progress | None = None,
    end_job: bool = True,
) -> BrandJobResult:
    """Drive a whole job from the brand's side: align, train one model per label, evaluate.

    ``train.labels`` holds one 0/1 vector per model. With ``test`` the matched test rows are
    scored; the models are evaluated on them when ``test.labels`` has every label, else (new
    leads) on a random holdout of the aligned rows, as without ``test``. With ``end_job=False``
    the scoring request does not end the partner's side, so a job built on this one (a lookalike
    job) can send further requests.

    Raises:
        ProtocolError: the partner's replies do not fit the job, or the alignment is empty.
        federated.errors.FederatedError, psi.errors.PsiError: a protocol failed.
    """
    options = options or JobOptions()
    if not train.labels:
        raise ValueError("the brand's table needs at least one label")
    started = time.perf_counter()
    counter = _Counter(exchange)
    note = progress or (lambda stage, done, total: None)

    note("align", 0, 1)
    rows = _align(job_id, "train", train, counter, options.workers, options.pool_alignment)
    note("align", 1, 1)
    if len(rows) < 10:
        raise InputError(
            f"the brand's and the partner's tables share {len(rows)} ids: too few to train "
            "(at least 10 are needed)"
        )
    # a test table with the labels is the evaluation set; new leads without labels are only
    # scored, and the models are evaluated on a holdout of the aligned rows as without a test
    labeled_test = test is not None and all(label in test.labels for label in train.labels)
    positions = _split(len(rows), options, labeled_test)
    names = ("train", "valid", "holdout")
    header = {"job": job_id, "models": len(train.labels), **{n: len(positions[n]) for n in names}}
    payload = b"".join(_ints(positions[n]) for n in names)
    planned, _ = _expect(counter(pack("plan", header, payload)), "planned", job_id)
    if planned.get("rows") != len(rows):
        raise ProtocolError("the partner aligned a different number of rows")
    partner_features = tuple(str(f) for f in planned.get("features", []))

    x_all = train.features[rows]
    standardizer = Standardizer.fit(x_all[positions["train"]])
    x_all = standardizer.apply(x_all)
    keys = KeyPair.generate(options.key_bits)
    trained: list[tuple[str, BrandTrainer]] = []
    for index, (label, y_full) in enumerate(train.labels.items()):
        y = y_full[rows]
        for part in ("train", "valid"):
            if len(np.unique(y[positions[part]])) < 2:
                raise ProtocolError(f"label {label}: the {part} rows hold only one class")
        training = options.training
        if options.balance_classes:  # weight positives by negatives / positives of this label
            y_train = y[positions["train"]]
            ratio = float((1 - y_train).sum() / y_train.sum())
            training = replace(training, positive_weight=ratio)
        trainer = BrandTrainer(
            f"{job_id}:m{index}",
            keys,
            x_all[positions["train"]],
            y[positions["train"]],
            x_all[positions["valid"]],
            y[positions["valid"]],
            training,
        )
        try:
            message: Message | None = trainer.start()
            step, steps = 0, _expected_steps(len(positions["train"]), options.training)
            while message is not None:
                request = pack("vfl", {"job": job_id, "model": index}, to_wire(message))
                _, reply = _expect(counter(request), "vfl", job_id)
                message = trainer.handle(from_wire(reply))
                step += 1
                note(f"train {label}", min(step, steps), steps)
        finally:
            trainer.close()
        trained.append((label, trainer))

    note("score", 0, 1)
    holdout = positions["holdout"]
    evaluation_labels: dict[str, npt.NDArray[np.float64]] = {}
    holdout_partial = None
    if not labeled_test:
        evaluation_labels = {k: v[rows][holdout] for k, v in train.labels.items()}
        holdout_partial = _scores(
            counter, job_id, "holdout", len(holdout), len(trained), end_job and test is None
        )
    if test is not None:
        test_rows = _align(job_id, "test", test, counter, options.workers)
        which, x_eval = "test", standardizer.apply(test.features[test_rows])
        if labeled_test:
            evaluation_labels = {k: v[test_rows] for k, v in test.labels.items()}
        scored_ids = test.ids.iloc[test_rows].reset_index(drop=True)
        partial = _scores(counter, job_id, "test", len(x_eval), len(trained), end_job)
    else:
        assert holdout_partial is not None
        which, x_eval, partial = "holdout", x_all[holdout], holdout_partial
        scored_ids = train.ids.iloc[rows[holdout]].reset_index(drop=True)
    count = len(x_eval)
    note("score", 1, 1)

    models = []
    for index, (label, trainer) in enumerate(trained):
        weights, intercept = trainer.weights
        scores = _sigmoid(x_eval @ weights + intercept + partial[index])
        y_eval = evaluation_labels.get(label)
        if labeled_test or test is None:
            evaluation = evaluate(y_eval, scores) if y_eval is not None and count else None
        else:
            assert holdout_partial is not None and y_eval is not None
            held = _sigmoid(x_all[holdout] @ weights + intercept + holdout_partial[index])
            evaluation = evaluate(y_eval, held) if len(holdout) else None
        models.append(
            ModelResult(
                label=label,
                weights=weights,
                intercept=intercept,
                history=list(trainer.history),
                best_epoch=trainer.best_epoch,
                epochs=len(trainer.history),
                evaluation=evaluation,
                scores=scores,
            )
        )
    return BrandJobResult(
        job_id=job_id,
        aligned_rows=len(rows),
        train_rows=len(positions["train"]),
        valid_rows=len(positions["valid"]),
        holdout_rows=len(positions["holdout"]),
        test_rows=count if test is not None else 0,
        brand_features=train.feature_names,
        partner_features=partner_features,
        standardizer=standardizer,
        models=models,
        scored_ids=scored_ids,
        evaluated_on="test" if labeled_test else "holdout",
        scored_on=which,
        round_trips=counter.round_trips,
        bytes_sent=counter.sent,
        bytes_received=counter.received,
        seconds=time.perf_counter() - started,
        key_bits=options.key_bits,
        key_fingerprint=keys.public_key.fingerprint,
    )


def _scores(
    counter: _Counter, job_id: str, which: str, count: int, models: int, final: bool
) -> npt.NDArray[np.float64]:
    """The partner's partial scores of one row set, one row per model."""
    header, payload = _expect(
        counter(pack("score", {"job": job_id, "set": which, "final": final})), "scores", job_id
    )
    if header.get("models") != models or header.get("rows") != count:
        raise ProtocolError("the partner scored a different set of rows")
    (flat,) = _split_arrays(payload, [models * count], "<f8")
    return flat.reshape(models, count) if count else np.zeros((models, 0))


def _expected_steps(train_rows: int, config: TrainingConfig) -> int:
    batches = -(-train_rows // config.batch_size) if config.batch_size else 2
    return 1 + config.epochs * (2 * batches + 1) + 1
