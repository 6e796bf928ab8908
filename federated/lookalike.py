"""A lookalike job: train on the overlap, score the partner's whole population, pick an audience.

Built on the VFL job (:mod:`federated.job`), still without I/O. The brand contributes **labels
only** (its seed: people with a 0/1 outcome), so the model uses the partner's features alone and
the partner can score people the brand does not know. Training is the VFL protocol unchanged:
labels and residuals never leave the brand in the clear; the partner keeps its weights. After
the holdout is scored (the job stays open), two more operations run:

============  ======================================  ===========================================
op            brand -> partner                        partner -> brand
============  ======================================  ===========================================
distribution  band edges on the partner's linear      people per band, bands with fewer than the
              score ``X_P·w_P`` (the brand's 0-1      minimum cell (but more than 0) suppressed;
              levels shifted by its intercept), the   only people the brand does not have (no
              brand's minimum cell                    matched row) and who have an id are
                                                      counted. Once per job.
audience      a threshold on the linear score, or an  a handle, the audience size and the lowest
              audience size; ends the job             selected linear score (the cut); the
                                                      member list stays with the partner
============  ======================================  ===========================================

An audience the partner cannot select (more people than it may choose from, fewer than its
minimum cell) is answered with ``refused`` and a reason; the job then ends with no audience.

The brand's intercept ``b`` turns a linear score ``s`` into the 0-1 score ``σ(s + b)``. The brand
never sends ``b``; it sends band edges and thresholds already on the partner's scale
(``logit(level) − b``). Since the levels are round numbers, the partner can infer ``b`` from the
edges: it ends up holding the whole lookalike model, which it needs anyway to select the audience
(see docs/threat-model.md). The brand estimates the audience's lift on its holdout rows: the
positive rate of the holdout rows scoring at least the cut over the holdout's positive rate.

Population scoring is a pure function over chunks of rows (:func:`score_population`), so memory
stays bounded by the chunk and the same function can be mapped over a cluster.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from federated.errors import ProtocolError
from federated.evaluation import Evaluation
from federated.job import (
    BrandJobResult,
    Exchange,
    JobOptions,
    PartnerJob,
    PartnerJobStage,
    PartyTable,
    Progress,
    Standardizer,
    _expect,
    pack,
    run_brand_job,
    unpack,
)
from federated.partner import PartnerConfig
from pec.errors import InputError

__all__ = [
    "DEFAULT_BANDS",
    "DEFAULT_MIN_CELL",
    "AudienceChoice",
    "LookalikeOptions",
    "LookalikePartnerJob",
    "LookalikeResult",
    "ScoreBand",
    "band_counts",
    "expected_lift",
    "run_brand_lookalike",
    "score_population",
    "select_audience",
    "suppress_small_cells",
]

DEFAULT_BANDS = 20
"""Score bands of the distribution: 0-1 scores in steps of 0.05."""
DEFAULT_MIN_CELL = 20
"""Bands with fewer people than this (but not none) are suppressed (as for aggregates)."""
MAX_BANDS = 100
"""At most this many bands: finer bands would mostly be suppressed and narrow the counts."""
CHUNK_ROWS = 1_000_000
"""Rows scored at a time: about ``CHUNK_ROWS × features × 8`` bytes of working memory."""


# -- pure parts ------------------------------------------------------------------------------------


def score_population(
    features: npt.NDArray[np.float64],
    standardizer: Standardizer,
    weights: npt.NDArray[np.float64],
    chunk_rows: int = CHUNK_ROWS,
) -> npt.NDArray[np.float64]:
    """The partner's linear score ``standardize(x)·w`` of every row, a chunk at a time.

    Raises:
        ValueError: the weights do not fit the features, or ``chunk_rows`` < 1.
    """
    if chunk_rows < 1 or features.ndim != 2 or features.shape[1] != len(weights):
        raise ValueError("weights must have one entry per feature column; chunk_rows >= 1")
    out = np.empty(len(features), dtype=np.float64)
    for start in range(0, len(features), chunk_rows):
        part = features[start : start + chunk_rows]
        out[start : start + len(part)] = standardizer.apply(part) @ weights
    return out


def band_counts(
    scores: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """People per band; ``edges`` are the inner, ascending band edges (``len(edges) + 1`` bands).

    A score equal to an edge belongs to the band above it, as a threshold at that edge selects it.

    Raises:
        ValueError: edges are not finite and strictly ascending.
    """
    if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ValueError("band edges must be finite and strictly ascending")
    index = np.searchsorted(edges, scores, side="right")
    return np.bincount(index, minlength=len(edges) + 1).astype(np.int64)


def suppress_small_cells(counts: npt.NDArray[np.int64], min_cell: int) -> list[int | None]:
    """Counts as released: ``None`` for every band with fewer than ``min_cell`` people but not 0.

    An empty band is released as 0: it reveals no one.
    """
    return [None if 0 < int(c) < min_cell else int(c) for c in counts]


def select_audience(
    scores: npt.NDArray[np.float64],
    excluded: npt.NDArray[np.int64],
    *,
    threshold: float | None = None,
    size: int | None = None,
) -> npt.NDArray[np.int64]:
    """Rows of the audience, highest score first (ties: the lower row number first).

    Every row not ``excluded`` scoring at least ``threshold``, or the ``size`` best such rows.

    Raises:
        ValueError: neither or both of threshold and size, or more rows asked for than eligible.
    """
    if (threshold is None) == (size is None):
        raise ValueError("give a threshold or an audience size")
    eligible = np.ones(len(scores), dtype=bool)
    eligible[excluded] = False
    rows = np.flatnonzero(eligible)
    if threshold is not None:
        rows = rows[scores[rows] >= threshold]
    else:
        assert size is not None
        if not 0 <= size <= len(rows):
            raise ValueError(f"an audience of {size} people is more than {len(rows)} eligible")
        if size == 0:
            rows = rows[:0]
        elif size < len(rows):
            # the size-th best score, then every row above it plus the first rows tying with it
            cut = np.partition(-scores[rows], size - 1)[size - 1]
            above = rows[-scores[rows] < cut]
            ties = rows[-scores[rows] == cut][: size - len(above)]
            rows = np.concatenate([above, ties])
    order = np.lexsort((rows, -scores[rows]))
    return rows[order].astype(np.int64)


def expected_lift(
    labels: npt.NDArray[np.float64], scores: npt.NDArray[np.float64], cut: float
) -> float | None:
    """Positive rate of the rows scoring at least ``cut`` over the overall positive rate.

    ``None`` when no row scores that high or there are no positives.
    """
    base = float(labels.mean()) if len(labels) else 0.0
    chosen = scores >= cut
    if base == 0 or not chosen.any():
        return None
    return float(labels[chosen].mean() / base)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


# -- partner ---------------------------------------------------------------------------------------


def _new_handle() -> str:
    return f"aud-{secrets.token_hex(8)}"


class LookalikePartnerJob(PartnerJob):
    """The partner's side of a lookalike job: its whole population is its table.

    Args:
        job_id: the approved job.
        population: every person the partner may score (ids and features).
        config: the partner's protocol settings.
        workers: worker processes for the alignment PSI.
        min_cell: the partner's own smallest released band and smallest audience; a brand may
            ask for a larger one, never a smaller one.
        new_handle: makes the audience handle (injected in tests).
        chunk_rows: rows scored at a time.
    """

    def __init__(
        self,
        job_id: str,
        population: PartyTable,
        config: PartnerConfig | None = None,
        workers: int = 0,
        *,
        min_cell: int = DEFAULT_MIN_CELL,
        new_handle: Callable[[], str] = _new_handle,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        super().__init__(job_id, population, None, config, workers)
        if min_cell < 1:
            raise ValueError("min_cell must be >= 1")
        self.min_cell = min_cell
        self._new_handle = new_handle
        self._chunk_rows = chunk_rows
        self.population_scores: npt.NDArray[np.float64] | None = None
        self.distribution: list[int | None] | None = None
        self.audience_rows: npt.NDArray[np.int64] | None = None
        self.audience_handle: str | None = None
        self.refusal: str | None = None
        """Why the audience request was refused (the job then ends with no audience)."""
        self.scoring_seconds = 0.0
        # a person without an id could not be delivered to: neither counted nor selected
        blank = population.ids.astype(str).str.strip() == ""
        self.without_id = np.flatnonzero(blank.to_numpy()).astype(np.int64)

    def answer(self, request: bytes) -> bytes:
        """Turn one brand request into the reply (the VFL job's operations plus two).

        Raises:
            ProtocolError, WireFormatError: the request does not fit the job's state.
        """
        op, header, _ = unpack(request)
        if op not in ("distribution", "audience"):
            if op == "score" and header.get("final") is True:
                raise ProtocolError("a lookalike job ends with its audience, not with scoring")
            return super().answer(request)
        if header.get("job") != self.job_id:
            raise ProtocolError("message for another job")
        if self.stage is PartnerJobStage.DONE:
            raise ProtocolError("the job has ended")
        if self.stage is not PartnerJobStage.SCORING or len(self.models) != 1:
            raise ProtocolError(f"unexpected {op} request in stage {self.stage.value}")
        if op == "distribution":
            return self._on_distribution(header)
        return self._on_audience(header)

    def _scores(self) -> npt.NDArray[np.float64]:
        if self.population_scores is None:
            assert self.standardizer is not None
            started = time.perf_counter()
            self.population_scores = score_population(
                self.train.features, self.standardizer, self.models[0].weights, self._chunk_rows
            )
            self.scoring_seconds = time.perf_counter() - started
        return self.population_scores

    def _excluded(self) -> npt.NDArray[np.int64]:
        """Rows never counted or selected: every matched (seed) row and every row without an id."""
        assert self.rows is not None
        return np.union1d(self.rows, self.without_id)

    def _min_cell(self, header: Mapping[str, Any]) -> int:
        asked = header.get("min_cell", 0)
        if not isinstance(asked, int) or asked < 0:
            raise ProtocolError("min_cell must be a non-negative integer")
        return max(self.min_cell, asked)

    def _on_distribution(self, header: Mapping[str, Any]) -> bytes:
        if self.distribution is not None:
            raise ProtocolError("the distribution was already released for this job")
        edges = header.get("edges")
        if (
            not isinstance(edges, list)
            or not 1 <= len(edges) < MAX_BANDS
            or not all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges)
        ):
            raise ProtocolError(f"the distribution needs 1 to {MAX_BANDS - 1} numeric band edges")
        min_cell = self._min_cell(header)
        scores = self._scores()
        eligible = np.ones(len(scores), dtype=bool)
        eligible[self._excluded()] = False
        try:
            counts = band_counts(scores[eligible], np.asarray(edges, dtype=np.float64))
        except ValueError as exc:
            raise ProtocolError(str(exc)) from exc
        self.distribution = suppress_small_cells(counts, min_cell)
        info = {"job": self.job_id, "counts": self.distribution, "min_cell": min_cell}
        return pack("distribution", info)

    def _on_audience(self, header: Mapping[str, Any]) -> bytes:
        if self.distribution is None:
            raise ProtocolError("the audience comes after the distribution")
        if header.get("final") is not True:
            raise ProtocolError("the audience request ends the job")
        threshold, size = header.get("threshold"), header.get("size")
        if threshold is not None and (
            not isinstance(threshold, int | float) or not math.isfinite(threshold)
        ):
            raise ProtocolError("the threshold must be a finite number")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise ProtocolError("the audience size must be an integer")
        min_cell = self._min_cell(header)
        self.stage = PartnerJobStage.DONE
        self.close()
        try:
            rows = select_audience(
                self._scores(),
                self._excluded(),
                threshold=None if threshold is None else float(threshold),
                size=size,
            )
            if len(rows) < min_cell:
                raise ValueError(f"the audience would hold fewer than the minimum of {min_cell}")
        except ValueError as exc:
            # a refusal the brand can act on travels as data; the job ends with nothing written
            self.refusal = str(exc)
            return pack("refused", {"job": self.job_id, "reason": self.refusal})
        self.audience_rows = rows
        self.audience_handle = self._new_handle()
        cut = float(self._scores()[rows[-1]])
        info = {
            "job": self.job_id,
            "handle": self.audience_handle,
            "size": len(rows),
            "cut": cut,
            "min_cell": min_cell,
        }
        return pack("audience", info)


# -- brand -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudienceChoice:
    """How the brand picks its audience: a 0-1 score threshold, or a number of people."""

    threshold: float | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if (self.threshold is None) == (self.size is None):
            raise ValueError("choose the audience by threshold or by size, not both or neither")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ValueError("the threshold is a 0-1 score strictly between 0 and 1")
        if self.size is not None and self.size < 1:
            raise ValueError("the audience size must be at least 1")


@dataclass(frozen=True)
class LookalikeOptions:
    """The brand's settings for one lookalike job."""

    audience: AudienceChoice
    job: JobOptions = field(default_factory=JobOptions)
    bands: int = DEFAULT_BANDS
    min_cell: int = DEFAULT_MIN_CELL
    """The smallest band the brand wants released (the partner may enforce a larger one)."""

    def __post_init__(self) -> None:
        if not 2 <= self.bands <= MAX_BANDS:
            raise ValueError(f"bands must be between 2 and {MAX_BANDS}")
        if self.min_cell < 1:
            raise ValueError("min_cell must be >= 1")


@dataclass(frozen=True)
class ScoreBand:
    """One band of the population's score distribution as the brand receives it."""

    low: float
    high: float
    count: int | None
    """People in the band; ``None`` when suppressed (fewer than the minimum cell)."""


@dataclass
class LookalikeResult:
    """What the brand learns and keeps from a lookalike job."""

    job: BrandJobResult
    label: str
    bands: list[ScoreBand]
    min_cell: int
    audience_handle: str
    audience_size: int
    audience_choice: AudienceChoice
    cut_score: float
    """The lowest 0-1 score in the audience."""
    expected_lift: float | None
    """Positive rate of holdout rows scoring at least ``cut_score`` over the holdout's rate."""
    holdout_rows_at_cut: int
    holdout_labels: npt.NDArray[np.float64]
    holdout_scores: npt.NDArray[np.float64]
    round_trips: int
    seconds: float
    phase_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds of each phase: align, train, score (the holdout), distribution, audience."""

    @property
    def evaluation(self) -> Evaluation | None:
        """AUC, KS and lift by decile on the holdout rows."""
        return self.job.models[0].evaluation


def run_brand_lookalike(
    job_id: str,
    seed: PartyTable,
    exchange: Exchange,
    options: LookalikeOptions,
    *,
    progress: Progress | None = None,
) -> LookalikeResult:
    """Drive a lookalike job from the brand's side: train, distribution, audience.

    ``seed`` holds the brand's ids and exactly one 0/1 label; its features are ignored (the
    model is on the partner's features only).

    Raises:
        InputError: the seed has not exactly one label, the overlap is too small, or the
            holdout has no positive.
        ProtocolError: the partner's replies do not fit the job.
        federated.errors.FederatedError, psi.errors.PsiError: a protocol failed.
    """
    if len(seed.labels) != 1:
        raise InputError("a lookalike job takes exactly one label")
    started = time.perf_counter()
    phases: dict[str, float] = {}
    clock = time.perf_counter

    def note(stage: str, done: int, total: int) -> None:
        # when each phase (align, train, score, distribution, audience) ends, for the summary
        phases[stage.split(" ")[0]] = clock() - started
        if progress is not None:
            progress(stage, done, total)

    (label,) = seed.labels
    labels_only = PartyTable(
        seed.ids, np.zeros((len(seed.ids), 0)), (), dict(seed.labels), id_kind=seed.id_kind
    )
    if options.job.holdout_fraction <= 0:
        raise InputError("a lookalike job needs holdout rows to estimate its lift")
    # the brand masks the partner's whole population in the alignment: a pool whatever its size
    job_options = replace(options.job, pool_alignment=True)
    result = run_brand_job(job_id, labels_only, exchange, job_options, progress=note, end_job=False)
    model = result.models[0]
    intercept = model.intercept
    position = {value: i for i, value in enumerate(seed.ids.tolist())}
    holdout_labels = seed.labels[label][[position[i] for i in result.scored_ids.tolist()]]
    if holdout_labels.sum() == 0:
        raise InputError(f"label {label!r}: the holdout rows hold no positive to estimate lift")

    note("distribution", 0, 1)
    levels = np.linspace(0.0, 1.0, options.bands + 1)
    edges = [_logit(float(v)) - intercept for v in levels[1:-1]]
    header, _ = _expect(
        exchange(
            pack("distribution", {"job": job_id, "edges": edges, "min_cell": options.min_cell})
        ),
        "distribution",
        job_id,
    )
    counts = header.get("counts")
    if not isinstance(counts, list) or len(counts) != options.bands:
        raise ProtocolError("the partner released a distribution with other bands")
    if any(c is not None and (not isinstance(c, int) or c < 0) for c in counts):
        raise ProtocolError("the partner released a malformed count")
    bands = [
        ScoreBand(float(levels[i]), float(levels[i + 1]), counts[i]) for i in range(options.bands)
    ]
    note("distribution", 1, 1)

    note("audience", 0, 1)
    choice = options.audience
    request: dict[str, Any] = {"job": job_id, "final": True, "min_cell": options.min_cell}
    if choice.threshold is not None:
        request["threshold"] = _logit(choice.threshold) - intercept
    else:
        request["size"] = choice.size
    answer = exchange(pack("audience", request))
    op, refused, _ = unpack(answer)
    if op == "refused" and refused.get("job") == job_id:
        raise InputError(f"the partner refused the audience: {refused.get('reason')}")
    reply, _ = _expect(answer, "audience", job_id)
    handle, size, cut = reply.get("handle"), reply.get("size"), reply.get("cut")
    if not isinstance(handle, str) or not isinstance(size, int) or not isinstance(cut, float):
        raise ProtocolError("the partner's audience reply is malformed")
    if choice.size is not None and size != choice.size:
        raise ProtocolError("the partner selected another number of people")
    note("audience", 1, 1)

    cut_score = _sigmoid(cut + intercept)
    holdout_scores = model.scores
    min_cell = reply.get("min_cell")
    return LookalikeResult(
        job=result,
        label=label,
        bands=bands,
        min_cell=int(min_cell) if isinstance(min_cell, int) else int(header.get("min_cell", 0)),
        audience_handle=handle,
        audience_size=size,
        audience_choice=choice,
        cut_score=cut_score,
        expected_lift=expected_lift(holdout_labels, holdout_scores, cut_score),
        holdout_rows_at_cut=int((holdout_scores >= cut_score).sum()),
        holdout_labels=holdout_labels,
        holdout_scores=holdout_scores,
        round_trips=result.round_trips + 2,
        seconds=time.perf_counter() - started,
        phase_seconds=_phase_durations(phases),
    )


def _phase_durations(ends: Mapping[str, float]) -> dict[str, float]:
    """Seconds per phase from the times at which each one last reported progress."""
    out, previous = {}, 0.0
    for name, end in sorted(ends.items(), key=lambda item: item[1]):
        out[name] = round(end - previous, 3)
        previous = end
    return out
