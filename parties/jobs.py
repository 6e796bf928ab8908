"""Job specifications and the partner's policy check: what may run, and why not.

A brand's modeler writes a job spec (TOML or JSON through the API); the brand node turns it into
a signed proposal; the partner node checks it against its policy before anything runs. The check
is a pure function that returns every reason for a refusal, so an operator can fix all of them at
once and an auditor can read them in the job's manifest.

Job kinds and what each reveals (see ``docs/threat-model.md``):

========== ===================================== ======================================
kind       PSI mode                              outputs the brand may ask for
========== ===================================== ======================================
overlap    count (nobody learns rows)            ``count``, ``per_key``
enrichment labeled, brand learns matched tags    ``tags:<column>`` for allowed columns
matching   partner learns the matched set        ``count`` (the partner gets the rows)
lead_scoring both learn own matched rows         ``scores``, ``metrics``
lookalike  both learn own matched rows           ``distribution``, ``audience_size``
aggregate  intersection statistics               ``aggregate:<column>`` (``a*b``: crossed)
========== ===================================== ======================================
"""

from __future__ import annotations

import json
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from parties.errors import NodeConfigError
from psi.normalize import KeyKind
from psi.protocol import Reveal

__all__ = ["Decision", "JobKind", "JobSpec", "KeySpec", "PartnerPolicy", "evaluate"]

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Purpose = Annotated[str, Field(pattern=r"^[a-z_]+(\.[a-z_]+)+$")]


class JobKind(StrEnum):
    """The six clean-room jobs."""

    OVERLAP = "overlap"
    LEAD_SCORING = "lead_scoring"
    LOOKALIKE = "lookalike"
    ENRICHMENT = "enrichment"
    AGGREGATE = "aggregate"
    MATCHING = "matching"

    @property
    def psi_reveal(self) -> Reveal:
        """Who learns rows in the job's PSI step (the brand is the left side)."""
        return {
            JobKind.OVERLAP: Reveal.COUNT,
            JobKind.ENRICHMENT: Reveal.LEFT,
            JobKind.MATCHING: Reveal.RIGHT,
            JobKind.LEAD_SCORING: Reveal.BOTH,
            JobKind.LOOKALIKE: Reveal.BOTH,
            JobKind.AGGREGATE: Reveal.COUNT,
        }[self]

    @property
    def allowed_output_prefixes(self) -> tuple[str, ...]:
        """Outputs that make sense for this kind."""
        return {
            JobKind.OVERLAP: ("count", "per_key"),
            JobKind.ENRICHMENT: ("tags:",),
            JobKind.MATCHING: ("count",),
            JobKind.LEAD_SCORING: ("scores", "metrics"),
            JobKind.LOOKALIKE: ("distribution", "audience_size", "metrics"),
            JobKind.AGGREGATE: ("aggregate:",),
        }[self]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeySpec(_Strict):
    """One matching key: the column on each side and its kind."""

    brand: str
    partner: str
    kind: KeyKind


class JobSpec(_Strict):
    """What the brand asks for. Datasets are names registered on each node, never paths."""

    kind: JobKind
    purpose: Purpose
    partner: Name
    brand_dataset: Name
    partner_dataset: Name
    keys: list[KeySpec] = Field(min_length=1)
    outputs: list[str] = Field(min_length=1)
    labels: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)
    """The brand's own feature columns (model kinds); the partner's are chosen by the partner."""
    score_dataset: Name | None = None
    """lead_scoring: the brand's new leads to score (consent-cut like the training input)."""
    scores_table: Name | None = None
    """lead_scoring: the dataset name the brand node registers its scores under, for later jobs
    and exports (a new name, or one an earlier job's scores hold)."""
    key_bits: int = Field(default=2048, ge=2048, le=4096)
    """Paillier key size of a model job."""
    audience_size: int | None = Field(default=None, ge=1)
    """lookalike: take the best this many people the brand does not have (or a threshold)."""
    audience_threshold: float | None = Field(default=None, gt=0, lt=1)
    """lookalike: take everyone the brand does not have scoring at least this 0-1 score."""
    bands: int = Field(default=20, ge=2, le=100)
    """lookalike: score bands of the distribution the brand sees."""
    min_cell: int | None = Field(default=None, ge=1)
    epsilon: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _outputs_fit_the_kind(self) -> JobSpec:
        prefixes = self.kind.allowed_output_prefixes
        for output in self.outputs:
            if not any(output == p or (p.endswith(":") and output.startswith(p)) for p in prefixes):
                raise ValueError(
                    f"output {output!r} does not fit a {self.kind.value} job "
                    f"(allowed: {', '.join(prefixes)})"
                )
        if self.kind in (JobKind.LEAD_SCORING, JobKind.LOOKALIKE) and not self.labels:
            raise ValueError(f"a {self.kind.value} job needs at least one label")
        if self.kind is JobKind.AGGREGATE and (
            len([o for o in self.outputs if o.startswith("aggregate:")]) != 1 or len(self.keys) != 1
        ):
            raise ValueError("an aggregate job has one key and one aggregate:<column> output")
        if self.kind is JobKind.LOOKALIKE:
            if len(self.labels) != 1:
                raise ValueError("a lookalike job has exactly one label: the seed's outcome")
            if (self.audience_size is None) == (self.audience_threshold is None):
                raise ValueError("a lookalike job takes audience_size or audience_threshold")
        return self

    @classmethod
    def load(cls, path: Path) -> JobSpec:
        """Read a job spec from TOML (``.toml``) or JSON.

        Raises:
            NodeConfigError: naming the file and the first bad field.
        """
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except FileNotFoundError:
            raise NodeConfigError(f"job spec {path}: not found") from None
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise NodeConfigError(f"job spec {path}: not valid ({exc})") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "spec"
            raise NodeConfigError(f"job spec {path}: field {where}: {first['msg']}") from None


class BrandGrant(_Strict):
    """What a partner allows one brand to do."""

    brand: Name
    purposes: list[Purpose] = Field(default_factory=list)
    job_kinds: list[JobKind] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    min_cohort: int = Field(default=1_000, ge=0)
    min_overlap: int = Field(default=100, ge=0)
    min_cell: int = Field(default=20, ge=1)
    max_epsilon: float | None = Field(default=None, gt=0)
    max_jobs_per_day: int | None = Field(default=None, ge=1)
    """Jobs this brand may have approved in any 24 hours (counted whatever became of them)."""
    epsilon_budget: float | None = Field(default=None, gt=0)
    """Total epsilon this brand may spend over all its aggregate jobs; with a budget, every
    aggregate job must add noise (an exact count spends it all)."""


class PartnerPolicy(_Strict):
    """The partner's rules, per brand. Anything not granted is refused."""

    grants: list[BrandGrant] = Field(default_factory=list)

    def grant_for(self, brand: str) -> BrandGrant | None:
        """The grant for this brand, if any."""
        return next((g for g in self.grants if g.brand == brand), None)


class Decision(_Strict):
    """The partner's answer to a proposal, with every reason for a refusal."""

    approved: bool
    reasons: list[str] = Field(default_factory=list)


def evaluate(
    policy: PartnerPolicy,
    brand: str,
    spec: JobSpec,
    *,
    brand_cohort: int,
    partner_cohort: int,
    approved_last_day: int = 0,
    epsilon_spent: float = 0.0,
) -> Decision:
    """Check a proposal against the partner's policy and both consent cohort sizes.

    ``brand_cohort`` is the size the brand declares for its consented input; ``partner_cohort`` is
    the partner's own consented population for the purpose. ``approved_last_day`` counts the
    brand's jobs this partner approved in the last 24 hours, ``epsilon_spent`` the epsilon of its
    approved aggregate jobs so far (the grant's ``max_jobs_per_day`` and ``epsilon_budget``). The
    overlap threshold is checked later, when the PSI count is known (:func:`overlap_allowed`).
    """
    grant = policy.grant_for(brand)
    if grant is None:
        return Decision(approved=False, reasons=[f"no grant for brand {brand!r}"])
    reasons = []
    if spec.purpose not in grant.purposes:
        reasons.append(f"purpose {spec.purpose!r} is not allowed for this brand")
    if spec.kind not in grant.job_kinds:
        reasons.append(f"job kind {spec.kind.value!r} is not allowed for this brand")
    for output in spec.outputs:
        if output not in grant.outputs:
            reasons.append(f"output {output!r} is not allowed for this brand")
    if brand_cohort < grant.min_cohort:
        reasons.append(f"brand cohort {brand_cohort} is below the minimum {grant.min_cohort}")
    if partner_cohort < grant.min_cohort:
        reasons.append(f"partner cohort {partner_cohort} is below the minimum {grant.min_cohort}")
    if spec.min_cell is not None and spec.min_cell < grant.min_cell:
        reasons.append(f"min_cell {spec.min_cell} is below the policy's {grant.min_cell}")
    if spec.epsilon is not None and (grant.max_epsilon is None or spec.epsilon > grant.max_epsilon):
        reasons.append(f"epsilon {spec.epsilon} exceeds the policy's {grant.max_epsilon}")
    if grant.max_jobs_per_day is not None and approved_last_day >= grant.max_jobs_per_day:
        reasons.append(
            f"the brand already had {approved_last_day} jobs approved in the last 24 hours "
            f"(the policy's maximum is {grant.max_jobs_per_day})"
        )
    if grant.epsilon_budget is not None and spec.kind is JobKind.AGGREGATE:
        left = max(grant.epsilon_budget - epsilon_spent, 0.0)
        if spec.epsilon is None:
            reasons.append("the policy's epsilon budget requires noise: give epsilon")
        elif spec.epsilon > left + 1e-12:
            reasons.append(
                f"epsilon {spec.epsilon} exceeds what is left of the policy's budget "
                f"({left:.4g} of {grant.epsilon_budget})"
            )
    return Decision(approved=not reasons, reasons=reasons)


def overlap_allowed(policy: PartnerPolicy, brand: str, overlap: int) -> Decision:
    """Whether a job may continue past its PSI step with this many matched records."""
    grant = policy.grant_for(brand)
    if grant is None:
        return Decision(approved=False, reasons=[f"no grant for brand {brand!r}"])
    if overlap < grant.min_overlap:
        return Decision(
            approved=False,
            reasons=[f"overlap {overlap} is below the minimum {grant.min_overlap}"],
        )
    return Decision(approved=True)
