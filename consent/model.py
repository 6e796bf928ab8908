"""The consent domain: vocabularies, the event record, its validation and its canonical bytes.

Vocabularies follow the W3C Data Privacy Vocabulary (DPV) where it has a term (states given,
refused, withdrawn, expired, invalidated; legal bases) and add what PIPL needs (separate consent
per recipient, sensitive categories that need explicit consent). Subjects appear only as a keyed
hash (:class:`SubjectKeyer`); a raw identifier is read once, at the boundary, and never stored,
logged or echoed in an error.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from consent.errors import ConsentInputError

SCHEMA_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_E = TypeVar("_E", bound=StrEnum)


class Action(StrEnum):
    """What an event does (the event types of the ledger)."""

    GRANT = "grant"
    REFUSE = "refuse"
    WITHDRAW = "withdraw"
    RENEW = "renew"
    EXPIRE = "expire"
    INVALIDATE = "invalidate"
    PREFERENCE = "preference"


class ConsentState(StrEnum):
    """DPV consent states a (subject, purpose, recipient) record can be in."""

    GIVEN = "given"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    INVALIDATED = "invalidated"


STATE_AFTER: dict[Action, ConsentState] = {
    Action.GRANT: ConsentState.GIVEN,
    Action.RENEW: ConsentState.GIVEN,
    Action.REFUSE: ConsentState.REFUSED,
    Action.WITHDRAW: ConsentState.WITHDRAWN,
    Action.EXPIRE: ConsentState.EXPIRED,
    Action.INVALIDATE: ConsentState.INVALIDATED,
}

#: Purpose taxonomy (dotted: domain.purpose). ``docs/consent.md`` maps each to DPV.
PURPOSES: frozenset[str] = frozenset(
    {
        "marketing.lead_scoring",
        "marketing.lookalike",
        "marketing.enrichment",
        "marketing.retargeting",
        "marketing.contact",
        "analytics.aggregate",
        "analytics.overlap",
        "third_party.matching",
    }
)

#: Data categories. Those in :data:`SENSITIVE_CATEGORIES` are PIPL Art. 28 sensitive personal
#: information and need explicit, separate consent.
DATA_CATEGORIES: frozenset[str] = frozenset(
    {
        "identifier.phone",
        "identifier.email",
        "identifier.device_id",
        "identifier.customer_id",
        "contact",
        "demographic",
        "behavior.app_usage",
        "behavior.web",
        "transaction.purchase",
        "transaction.vehicle",
        "insurance",
        "income_level",
        "interests",
        "location.coarse",
        "location.precise",
        "health",
        "financial_account",
        "biometric",
        "religion",
        "specific_identity",
        "minor",
    }
)
SENSITIVE_CATEGORIES: frozenset[str] = frozenset(
    {
        "location.precise",
        "health",
        "financial_account",
        "biometric",
        "religion",
        "specific_identity",
        "minor",
    }
)


class LegalBasis(StrEnum):
    """Legal bases (DPV / GDPR Art. 6 / PIPL Art. 13)."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTEREST = "vital_interest"
    PUBLIC_INTEREST = "public_interest"
    LEGITIMATE_INTEREST = "legitimate_interest"
    PUBLICLY_AVAILABLE = "publicly_available"


class CollectionMethod(StrEnum):
    """How the event was collected."""

    WEB_FORM = "web_form"
    APP = "app"
    WECHAT = "wechat"
    SMS = "sms"
    EMAIL = "email"
    PHONE = "phone"
    PAPER = "paper"
    IN_STORE = "in_store"
    API = "api"
    SYSTEM = "system"


class Channel(StrEnum):
    """Contact channels a preference can govern."""

    SMS = "sms"
    EMAIL = "email"
    WECHAT = "wechat"
    APP_PUSH = "app_push"
    PHONE_CALL = "phone_call"


#: Columns of an import file (CSV header or JSONL keys). Those marked required must be present.
REQUIRED_CONSENT_FIELDS = (
    "event_id",
    "subject_id",
    "action",
    "purpose",
    "recipient",
    "data_categories",
    "legal_basis",
    "notice_id",
    "notice_version",
    "method",
    "occurred_at",
    "jurisdiction",
)
OPTIONAL_FIELDS = (
    "valid_until",
    "explicit",
    "notice_language",
    "notice_hash",
    "channel",
    "allowed",
    "topics",
    "hours",
    "timezone",
    "max_per_day",
    "max_per_week",
)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
_JURISDICTION = re.compile(r"^(?:[A-Z]{2}(?:-[A-Z0-9]{1,3})?|EU)$")
_TOPIC = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")
_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n", ""}


class SubjectKeyer:
    """Turns a raw subject identifier into the keyed hash the ledger stores.

    ``HMAC-SHA256(node subject key, "pec-subject-v1" || 0x00 || identifier)`` as 64 hex digits.
    Without the node's key nobody can test a guessed identifier against the ledger.
    """

    __slots__ = ("_inner", "_key", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the subject key must be at least 32 bytes")
        self._key = key
        # HMAC (RFC 2104) with the key's inner and outer hash states computed once: the same
        # digest as hmac.new(key, msg, sha256), without re-deriving the pads per subject.
        block = hashlib.sha256().block_size
        k = hashlib.sha256(key).digest() if len(key) > block else key
        k = k.ljust(block, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in k))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in k))

    def __repr__(self) -> str:
        return "SubjectKeyer(<hidden>)"

    def secret_hex(self) -> str:
        """The key in hex, only to hand it to this node's own import worker (over a pipe)."""
        return self._key.hex()

    def key_of(self, subject_id: str) -> str:
        """Return the subject key of a raw identifier (surrounding spaces ignored).

        Raises:
            ConsentInputError: the identifier is empty or too long.
        """
        ident = subject_id.strip()
        if not ident or len(ident) > 512:
            raise ConsentInputError(
                "must be a non-empty identifier of at most 512 characters", field="subject_id"
            )
        inner = self._inner.copy()
        inner.update(b"pec-subject-v1\x00" + ident.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


@dataclass(frozen=True, slots=True)
class Preference:
    """A contact preference carried by a ``preference`` event."""

    channel: Channel
    allowed: bool
    topics: tuple[str, ...] = ()
    hours: str | None = None
    timezone: str = "UTC"
    max_per_day: int | None = None
    max_per_week: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (also part of the leaf bytes)."""
        return {
            "channel": self.channel.value,
            "allowed": self.allowed,
            "topics": list(self.topics),
            "hours": self.hours,
            "timezone": self.timezone,
            "max_per_day": self.max_per_day,
            "max_per_week": self.max_per_week,
        }


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One validated ledger event. ``subject_key`` is the keyed hash, never the raw identifier."""

    event_id: str
    subject_key: str
    action: Action
    purpose: str
    recipient: str
    data_categories: tuple[str, ...]
    legal_basis: LegalBasis
    notice_id: str
    notice_version: str
    method: CollectionMethod
    occurred_at: datetime
    jurisdiction: str
    valid_until: datetime | None = None
    explicit: bool = False
    notice_language: str | None = None
    notice_hash: str | None = None
    preference: Preference | None = None

    @property
    def sensitive(self) -> bool:
        """Whether the event covers sensitive personal information."""
        return any(c in SENSITIVE_CATEGORIES for c in self.data_categories)

    def content(self) -> dict[str, Any]:
        """Return the event's content as a JSON-ready dict (without ledger position)."""
        return {
            "v": SCHEMA_VERSION,
            "event_id": self.event_id,
            "subject_key": self.subject_key,
            "action": self.action.value,
            "purpose": self.purpose,
            "recipient": self.recipient,
            "data_categories": list(self.data_categories),
            "legal_basis": self.legal_basis.value,
            "notice_id": self.notice_id,
            "notice_version": self.notice_version,
            "notice_language": self.notice_language,
            "notice_hash": self.notice_hash,
            "method": self.method.value,
            "occurred_at": format_time(self.occurred_at),
            "valid_until": format_time(self.valid_until) if self.valid_until else None,
            "jurisdiction": self.jurisdiction,
            "explicit": self.explicit,
            "preference": self.preference.to_dict() if self.preference else None,
        }

    def content_json(self) -> str:
        """Return ``canonical_json(self.content())`` as text, built directly (imports are hot).

        Keys are written in sorted order and strings escaped by the ``json`` module's own
        encoder, so the text is the canonical JSON byte for byte (a property test checks it).
        """
        q = _json_str
        pref, until = self.preference, self.valid_until
        return (
            f'{{"action":{q(self.action.value)},"data_categories":['
            f"{','.join([q(c) for c in self.data_categories])}],"
            f'"event_id":{q(self.event_id)},"explicit":{"true" if self.explicit else "false"},'
            f'"jurisdiction":{q(self.jurisdiction)},"legal_basis":{q(self.legal_basis.value)},'
            f'"method":{q(self.method.value)},"notice_hash":{_json_opt(self.notice_hash)},'
            f'"notice_id":{q(self.notice_id)},"notice_language":{_json_opt(self.notice_language)},'
            f'"notice_version":{q(self.notice_version)},'
            f'"occurred_at":"{format_time(self.occurred_at)}",'
            f'"preference":{"null" if pref is None else canonical_json(pref.to_dict()).decode()},'
            f'"purpose":{q(self.purpose)},"recipient":{q(self.recipient)},'
            f'"subject_key":{q(self.subject_key)},"v":{SCHEMA_VERSION},'
            f'"valid_until":{"null" if until is None else q(format_time(until))}}}'
        )

    def content_hash(self) -> bytes:
        """Return SHA-256 of the canonical content: two imports of one event compare equal."""
        return hashlib.sha256(self.content_json().encode("utf-8")).digest()

    @classmethod
    def from_content(cls, content: Mapping[str, Any]) -> ConsentEvent:
        """Rebuild an event from :meth:`content` output (as stored in the ledger)."""
        pref = content.get("preference")
        return cls(
            event_id=content["event_id"],
            subject_key=content["subject_key"],
            action=Action(content["action"]),
            purpose=content["purpose"],
            recipient=content["recipient"],
            data_categories=tuple(content["data_categories"]),
            legal_basis=LegalBasis(content["legal_basis"]),
            notice_id=content["notice_id"],
            notice_version=content["notice_version"],
            notice_language=content.get("notice_language"),
            notice_hash=content.get("notice_hash"),
            method=CollectionMethod(content["method"]),
            occurred_at=parse_time(content["occurred_at"], "occurred_at"),
            valid_until=(
                parse_time(content["valid_until"], "valid_until")
                if content.get("valid_until")
                else None
            ),
            jurisdiction=content["jurisdiction"],
            explicit=bool(content.get("explicit", False)),
            preference=(
                Preference(
                    channel=Channel(pref["channel"]),
                    allowed=bool(pref["allowed"]),
                    topics=tuple(pref.get("topics") or ()),
                    hours=pref.get("hours"),
                    timezone=pref.get("timezone") or "UTC",
                    max_per_day=pref.get("max_per_day"),
                    max_per_week=pref.get("max_per_week"),
                )
                if pref
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class Recipient:
    """A third party and what the subject is told about it (PIPL Art. 23)."""

    recipient_id: str
    name: str
    contact: str
    purposes: tuple[str, ...]
    processing_method: str
    data_categories: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "recipient_id": self.recipient_id,
            "name": self.name,
            "contact": self.contact,
            "purposes": list(self.purposes),
            "processing_method": self.processing_method,
            "data_categories": list(self.data_categories),
        }


def parse_recipient(data: Mapping[str, Any]) -> Recipient:
    """Validate a recipient record.

    Raises:
        ConsentInputError: naming the bad field.
    """
    rid = _identifier(data, "recipient_id")
    fields = {}
    for name in ("name", "contact", "processing_method"):
        text = _text(data, name)
        if len(text) > 256 or any(ord(ch) < 32 for ch in text):
            raise ConsentInputError("must be at most 256 printable characters", field=name)
        fields[name] = text
    purposes = sorted(set(_list(data, "purposes")))
    if not purposes or any(p not in PURPOSES for p in purposes):
        raise ConsentInputError("must list purposes from the taxonomy", field="purposes")
    cats = sorted(set(_list(data, "data_categories")))
    if not cats or any(c not in DATA_CATEGORIES for c in cats):
        raise ConsentInputError("must list categories from the taxonomy", field="data_categories")
    return Recipient(
        recipient_id=rid,
        name=fields["name"],
        contact=fields["contact"],
        purposes=tuple(purposes),
        processing_method=fields["processing_method"],
        data_categories=tuple(cats),
    )


#: The string encoder ``json.dumps(..., ensure_ascii=False)`` uses (the C one when available).
_json_str: Callable[[str], str] = json.encoder.encode_basestring


def _json_opt(value: str | None) -> str:
    return "null" if value is None else _json_str(value)


#: An event ready to append, as plain values (cheap to build, to pickle between processes and
#: to insert): ``(row, event_id, content_json, content_hash, subject_key, action, purpose,
#: recipient, categories, occurred_us, valid_until_us, explicit, legal_basis, preference)``;
#: ``preference`` is ``None`` or ``(channel, allowed, topics, hours, timezone, max_per_day,
#: max_per_week)`` as the ``consent_preferences`` columns hold them.
Draft = tuple[
    int,
    str,
    str,
    bytes,
    str,
    str,
    str,
    str,
    str,
    int,
    int | None,
    bool,
    str,
    tuple[Any, ...] | None,
]


def draft_of(row: int, ev: ConsentEvent) -> Draft:
    """Return the :data:`Draft` of a validated event (``row``: its 1-based place in the input)."""
    content_json = ev.content_json()
    p = ev.preference
    return (
        row,
        ev.event_id,
        content_json,
        hashlib.sha256(content_json.encode("utf-8")).digest(),
        ev.subject_key,
        ev.action.value,
        ev.purpose,
        ev.recipient,
        ";".join(ev.data_categories),
        to_micros(ev.occurred_at),
        None if ev.valid_until is None else to_micros(ev.valid_until),
        ev.explicit,
        ev.legal_basis.value,
        None
        if p is None
        else (
            p.channel.value,
            p.allowed,
            ";".join(p.topics),
            p.hours,
            p.timezone,
            p.max_per_day,
            p.max_per_week,
        ),
    )


def canonical_json(value: Any) -> bytes:
    """Serialize deterministically: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def format_time(value: datetime) -> str:
    """Format an aware datetime as UTC ISO 8601 with microseconds and ``Z``."""
    v = value if value.tzinfo is UTC else value.astimezone(UTC)
    return v.isoformat(timespec="microseconds")[:-6] + "Z"


def to_micros(value: datetime) -> int:
    """Return microseconds since the Unix epoch of an aware datetime."""
    return (value - _EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    """Inverse of :func:`to_micros`."""
    return _EPOCH + timedelta(microseconds=value)


def parse_time(value: Any, field: str) -> datetime:
    """Parse an ISO 8601 timestamp that carries a UTC offset; return it in UTC.

    Raises:
        ConsentInputError: the value is not ISO 8601 or has no offset.
    """
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        if not text:
            raise ConsentInputError("is required", field=field)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ConsentInputError("is not an ISO 8601 timestamp", field=field) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ConsentInputError("needs a UTC offset (for example 'Z' or '+08:00')", field=field)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ConsentInputError("is outside the supported range of dates", field=field) from None


def _text(row: Mapping[str, Any], field: str, *, required: bool = True) -> str:
    raw = row.get(field)
    text = "" if raw is None else str(raw).strip()
    if required and not text:
        raise ConsentInputError("is required", field=field)
    return text


def _identifier(row: Mapping[str, Any], field: str, *, required: bool = True) -> str:
    text = _text(row, field, required=required)
    if text and not _ID.match(text):
        raise ConsentInputError(
            "must be 1-128 characters of letters, digits and . _ : @ / -", field=field
        )
    return text


_MEMBERS: dict[type[StrEnum], dict[str, Any]] = {}


def _choice(row: Mapping[str, Any], field: str, enum: type[_E]) -> _E:
    text = _text(row, field).lower()
    members = _MEMBERS.get(enum)
    if members is None:  # a dict lookup is several times cheaper than Enum(value)
        members = _MEMBERS[enum] = {e.value: e for e in enum}
    member = members.get(text)
    if member is None:
        allowed = ", ".join(e.value for e in enum)
        raise ConsentInputError(f"must be one of: {allowed}", field=field)
    result: _E = member
    return result


def _bool(row: Mapping[str, Any], field: str, default: bool) -> bool:
    raw = row.get(field)
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text == "":
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConsentInputError("must be true or false", field=field)


def _list(row: Mapping[str, Any], field: str) -> list[str]:
    raw = row.get(field)
    if raw is None:
        return []
    if isinstance(raw, list | tuple):
        items = [str(x).strip() for x in raw]
    else:
        items = [part.strip() for part in str(raw).split(";")]
    return [x for x in items if x]


def _optional_int(row: Mapping[str, Any], field: str) -> int | None:
    raw = row.get(field)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool):
        raise ConsentInputError("must be a whole number", field=field)
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConsentInputError("must be a whole number", field=field) from None
    if not 0 <= value <= 10_000:
        raise ConsentInputError("must be between 0 and 10000", field=field)
    return value


def parse_hours(text: str) -> tuple[time, time]:
    """Parse ``HH:MM-HH:MM`` (end exclusive; ``24:00`` allowed as end).

    Raises:
        ConsentInputError: malformed.
    """
    m = _HOURS.match(text)
    if not m:
        raise ConsentInputError("must look like 09:00-21:00", field="hours")
    start = time(int(m.group(1)), int(m.group(2)))
    end_h, end_m = int(m.group(3)), int(m.group(4))
    if end_h == 24 and end_m != 0:
        raise ConsentInputError("must look like 09:00-21:00", field="hours")
    end = time.max if end_h == 24 else time(end_h, end_m)
    return start, end


def parse_event(row: Mapping[str, Any], keyer: SubjectKeyer) -> ConsentEvent:
    """Validate one input row (CSV dict or JSON object) and return the event.

    Raises:
        ConsentInputError: naming the first bad field; the caller adds row and file.
    """
    event_id = _identifier(row, "event_id")
    subject_raw = row.get("subject_id")
    if subject_raw is None or not str(subject_raw).strip():
        raise ConsentInputError("is required", field="subject_id")
    subject_key = keyer.key_of(str(subject_raw))
    action = _choice(row, "action", Action)
    occurred_at = parse_time(row.get("occurred_at", ""), "occurred_at")
    valid_until_text = _text(row, "valid_until", required=False)
    valid_until = parse_time(valid_until_text, "valid_until") if valid_until_text else None
    if valid_until is not None and valid_until <= occurred_at:
        raise ConsentInputError("must be later than occurred_at", field="valid_until")
    jurisdiction = _text(row, "jurisdiction").upper()
    if not _JURISDICTION.match(jurisdiction):
        raise ConsentInputError(
            "must be an ISO 3166 code such as CN, CN-31 or EU", field="jurisdiction"
        )
    legal_basis = _choice(row, "legal_basis", LegalBasis)
    method = _choice(row, "method", CollectionMethod)
    notice_id = _identifier(row, "notice_id")
    notice_version = _identifier(row, "notice_version")
    notice_language = _text(row, "notice_language", required=False) or None
    if notice_language is not None and not re.match(
        r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", notice_language
    ):
        raise ConsentInputError("must be a BCP 47 tag such as zh-CN", field="notice_language")
    notice_hash = _text(row, "notice_hash", required=False).lower() or None
    if notice_hash is not None and not re.match(r"^[0-9a-f]{64}$", notice_hash):
        raise ConsentInputError("must be a SHA-256 digest in hex", field="notice_hash")
    explicit = _bool(row, "explicit", default=False)
    recipient = _identifier(row, "recipient", required=False)
    categories = _list(row, "data_categories")
    for cat in categories:
        if cat not in DATA_CATEGORIES:
            raise ConsentInputError(
                "holds a category outside the taxonomy", field="data_categories"
            )
    if len(set(categories)) != len(categories):
        raise ConsentInputError("lists a category twice", field="data_categories")
    categories.sort()

    purpose = _text(row, "purpose", required=action is not Action.PREFERENCE)
    preference: Preference | None = None
    if action is Action.PREFERENCE:
        if purpose:
            raise ConsentInputError("must be empty for a preference event", field="purpose")
        preference = _parse_preference(row)
    else:
        if purpose not in PURPOSES:
            raise ConsentInputError("is not in the purpose taxonomy", field="purpose")
        if action in (Action.GRANT, Action.RENEW):
            if not categories:
                raise ConsentInputError(
                    "needs at least one category for a grant", field="data_categories"
                )
            if any(c in SENSITIVE_CATEGORIES for c in categories) and not explicit:
                raise ConsentInputError(
                    "covers sensitive personal information, which needs explicit=true "
                    "(separate, explicit consent)",
                    field="explicit",
                )
            if legal_basis is not LegalBasis.CONSENT and recipient:
                raise ConsentInputError(
                    "must be 'consent' when data goes to a third party (PIPL Art. 23)",
                    field="legal_basis",
                )
    return ConsentEvent(
        event_id=event_id,
        subject_key=subject_key,
        action=action,
        purpose=purpose,
        recipient=recipient,
        data_categories=tuple(categories),
        legal_basis=legal_basis,
        notice_id=notice_id,
        notice_version=notice_version,
        notice_language=notice_language,
        notice_hash=notice_hash,
        method=method,
        occurred_at=occurred_at,
        valid_until=valid_until,
        jurisdiction=jurisdiction,
        explicit=explicit,
        preference=preference,
    )


def _parse_preference(row: Mapping[str, Any]) -> Preference:
    channel = _choice(row, "channel", Channel)
    allowed = _bool(row, "allowed", default=True)
    topics = _list(row, "topics")
    for topic in topics:
        if not _TOPIC.match(topic):
            raise ConsentInputError("holds a malformed topic", field="topics")
    hours = _text(row, "hours", required=False) or None
    if hours is not None:
        parse_hours(hours)
    tz = _text(row, "timezone", required=False) or "UTC"
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(tz)
    except (KeyError, ValueError, OSError):
        raise ConsentInputError("is not an IANA time zone", field="timezone") from None
    return Preference(
        channel=channel,
        allowed=allowed,
        topics=tuple(sorted(set(topics))),
        hours=hours,
        timezone=tz,
        max_per_day=_optional_int(row, "max_per_day"),
        max_per_week=_optional_int(row, "max_per_week"),
    )
