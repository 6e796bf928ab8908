"""Request and response bodies of the consent routes (separate from the table models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from consent.model import Channel

_Text = Field(default=None, max_length=512)


class EventIn(BaseModel):
    """One consent or preference event; the same fields as a row of an import file."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(max_length=128, description="Unique id; re-sending it is a no-op.")
    subject_id: str = Field(max_length=512, description="Raw identifier; keyed, never stored.")
    action: str = Field(
        max_length=16,
        description="grant, refuse, withdraw, renew, expire, invalidate or preference.",
    )
    purpose: str = Field(default="", max_length=64)
    recipient: str = Field(default="", max_length=128, description="Third party; '' = us.")
    data_categories: list[str] | str = Field(default_factory=list, max_length=64)
    legal_basis: str = Field(default="consent", max_length=32)
    notice_id: str = Field(max_length=128)
    notice_version: str = Field(max_length=128)
    method: str = Field(max_length=32)
    occurred_at: str = Field(max_length=64, description="ISO 8601 with offset.")
    valid_until: str | None = Field(default=None, max_length=64)
    jurisdiction: str = Field(max_length=16)
    explicit: bool = False
    notice_language: str | None = Field(default=None, max_length=35)
    notice_hash: str | None = Field(default=None, max_length=64)
    channel: str | None = Field(default=None, max_length=16)
    allowed: bool | None = None
    topics: list[str] | str | None = Field(default=None, max_length=64)
    hours: str | None = Field(default=None, max_length=16)
    timezone: str | None = Field(default=None, max_length=64)
    max_per_day: int | None = Field(default=None, ge=0, le=10_000)
    max_per_week: int | None = Field(default=None, ge=0, le=10_000)


class EventsIn(BaseModel):
    """A batch of events, recorded all or nothing."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=100_000)


class WithdrawIn(BaseModel):
    """Withdraw consent for one purpose and recipient: one call, like granting."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(max_length=128)
    subject_id: str = Field(max_length=512)
    purpose: str = Field(max_length=64)
    recipient: str = Field(default="", max_length=128)
    notice_id: str = Field(max_length=128)
    notice_version: str = Field(max_length=128)
    method: str = Field(max_length=32)
    jurisdiction: str = Field(max_length=16)
    occurred_at: str | None = Field(default=None, max_length=64, description="Default: now.")


class TreeHeadOut(BaseModel):
    """A signed tree head."""

    tree_size: int
    root_hash: str
    timestamp: str
    key_id: str
    signature: str


class AppendOut(BaseModel):
    """What a write did."""

    appended: int
    skipped: int
    tree_head: TreeHeadOut | None


class CheckIn(BaseModel):
    """Whether a subject's data may be used for a purpose by a recipient."""

    model_config = ConfigDict(extra="forbid")

    subject_id: str = Field(max_length=512)
    purpose: str = Field(max_length=64)
    recipient: str = Field(default="", max_length=128)
    data_categories: list[str] = Field(default_factory=list, max_length=64)
    at: str | None = Field(default=None, max_length=64)


class DecisionOut(BaseModel):
    """A yes/no with reasons."""

    allowed: bool
    reasons: list[str]
    state: str | None = None


class ContactCheckIn(BaseModel):
    """Whether a subject may be contacted on a channel about a topic."""

    model_config = ConfigDict(extra="forbid")

    subject_id: str = Field(max_length=512)
    channel: Channel
    topic: str = Field(max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    at: str | None = Field(default=None, max_length=64)


class ContactIn(BaseModel):
    """A contact that was made (counts toward frequency caps)."""

    model_config = ConfigDict(extra="forbid")

    subject_id: str = Field(max_length=512)
    channel: Channel
    topic: str = Field(max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    at: str | None = Field(default=None, max_length=64)


class SubjectIn(BaseModel):
    """A subject, named in the body so identifiers never appear in URLs or access logs."""

    model_config = ConfigDict(extra="forbid")

    subject_id: str = Field(max_length=512)


class CohortIn(BaseModel):
    """Cut a cohort: purpose, recipient, categories, time."""

    model_config = ConfigDict(extra="forbid")

    purpose: str = Field(max_length=64)
    recipient: str = Field(default="", max_length=128)
    data_categories: list[str] = Field(default_factory=list, max_length=64)
    at: str | None = Field(default=None, max_length=64)


class RecipientIn(BaseModel):
    """A third party and what subjects are told about it (PIPL Art. 23)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    contact: str = Field(max_length=256)
    purposes: list[str] = Field(min_length=1, max_length=16)
    processing_method: str = Field(max_length=256)
    data_categories: list[str] = Field(min_length=1, max_length=64)


class RecipientOut(BaseModel):
    """A registered recipient."""

    recipient_id: str
    name: str
    contact: str
    purposes: list[str]
    processing_method: str
    data_categories: list[str]


class VerifyOut(BaseModel):
    """The verifier's report."""

    ok: bool
    entries_checked: int
    tree_heads_checked: int
    tree_head: TreeHeadOut | None
    first_bad_entry: int | None
    reason: str | None


class TreeHeadWithKeyOut(BaseModel):
    """The latest signed tree head and the key that signs heads."""

    tree_head: TreeHeadOut | None
    public_key_pem: str


class InclusionOut(BaseModel):
    """An RFC 9162 audit path."""

    leaf_index: int
    tree_size: int
    leaf_hash: str
    audit_path: list[str]
    tree_head: TreeHeadOut


class ConsistencyOut(BaseModel):
    """An RFC 9162 consistency proof."""

    old_size: int
    new_size: int
    proof: list[str]
    old_tree_head: TreeHeadOut
    new_tree_head: TreeHeadOut


SignedDocument = dict[str, Any]


class JobOut(BaseModel):
    """A job's status as this node sees it (``side``: the role this node plays in it)."""

    job_id: str
    side: str
    peer: str
    kind: str
    purpose: str
    state: str = Field(description="proposed, approved, rejected, running, completed or failed.")
    reason: str = Field(description="Why a job was rejected or failed; '' otherwise.")
    progress: float = Field(ge=0, le=1)
    created_at: str
    updated_at: str


class JobResultOut(BaseModel):
    """A completed job's declared outputs and metrics (never rows of the other party)."""

    job_id: str
    kind: str
    metrics: dict[str, Any]
    outputs: dict[str, Any]
