from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ledger_helpers import event

from consent.errors import ConsentInputError
from consent.model import (
    Action,
    ConsentEvent,
    SubjectKeyer,
    parse_event,
    parse_time,
)

pytestmark = pytest.mark.unit

KEYER = SubjectKeyer(b"k" * 32)


def test_valid_row_parses_to_utc_and_sorted_categories() -> None:
    ev = parse_event(event(1, data_categories="income_level; identifier.phone"), KEYER)
    assert ev.action is Action.GRANT
    assert ev.occurred_at == datetime(2026, 1, 10, 1, 0, tzinfo=UTC)
    assert ev.data_categories == ("identifier.phone", "income_level")
    assert ev.subject_key == KEYER.key_of("alice") != "alice"
    assert ConsentEvent.from_content(ev.content()) == ev


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "has space"}, "event_id"),
        ({"subject_id": "  "}, "subject_id"),
        ({"action": "approve"}, "action"),
        ({"purpose": "marketing.spam"}, "purpose"),
        ({"data_categories": "identifier.phone;shoe_size"}, "data_categories"),
        ({"data_categories": ""}, "data_categories"),
        ({"legal_basis": "because"}, "legal_basis"),
        ({"method": "telepathy"}, "method"),
        ({"occurred_at": "2026-01-10 09:00:00"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"valid_until": "2025-01-01T00:00:00Z"}, "valid_until"),
        ({"jurisdiction": "China"}, "jurisdiction"),
        ({"notice_version": ""}, "notice_version"),
        ({"data_categories": "health"}, "explicit"),
        ({"recipient": "ins-co", "legal_basis": "contract"}, "legal_basis"),
        ({"explicit": "maybe"}, "explicit"),
    ],
)
def test_bad_field_is_named_and_value_not_echoed(override: dict[str, str], field: str) -> None:
    row = event(1, subject="secret-subject-13800138000", **override)
    with pytest.raises(ConsentInputError) as info:
        parse_event(row, KEYER)
    assert info.value.field == field
    assert "13800138000" not in str(info.value)
    for value in override.values():
        if value.strip():
            assert value not in str(info.value)


def test_sensitive_category_needs_explicit_consent() -> None:
    ev = parse_event(event(1, data_categories="health", explicit="true"), KEYER)
    assert ev.sensitive and ev.explicit


def test_preference_event() -> None:
    ev = parse_event(
        event(
            2,
            action="preference",
            purpose="",
            data_categories="",
            channel="sms",
            allowed="yes",
            topics="new_models;offers",
            hours="09:00-21:00",
            timezone="Asia/Shanghai",
            max_per_week="2",
        ),
        KEYER,
    )
    assert ev.preference is not None
    assert ev.preference.topics == ("new_models", "offers")
    with pytest.raises(ConsentInputError) as info:
        parse_event(event(3, action="preference", purpose="", hours="9-5", channel="sms"), KEYER)
    assert info.value.field == "hours"
    with pytest.raises(ConsentInputError) as info:
        parse_event(event(4, action="preference", purpose="", channel="fax"), KEYER)
    assert info.value.field == "channel"


def test_keyer_is_keyed_and_hides_its_key() -> None:
    other = SubjectKeyer(b"x" * 32)
    assert KEYER.key_of("alice") != other.key_of("alice")
    assert KEYER.key_of(" alice ") == KEYER.key_of("alice")
    assert "k" * 32 not in repr(KEYER)
    with pytest.raises(ValueError):
        SubjectKeyer(b"short")


def test_parse_time_requires_offset() -> None:
    assert parse_time("2026-01-01T00:00:00Z", "t") == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ConsentInputError):
        parse_time("2026-01-01T00:00:00", "t")


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"subject": "ünïcode-主体", "notice_language": "zh-CN", "notice_hash": "ab" * 32},
        {"valid_until": "2027-01-10T00:00:00.123456-05:30", "explicit": "true"},
        {"data_categories": "health;identifier.phone", "explicit": "yes", "recipient": "ins-co"},
        {
            "action": "preference",
            "purpose": "",
            "data_categories": "",
            "channel": "sms",
            "allowed": "false",
            "topics": "cars;news",
            "hours": "09:00-21:00",
            "timezone": "Asia/Shanghai",
            "max_per_day": "2",
        },
        {"action": "withdraw", "data_categories": "", "occurred_at": "0999-01-01T00:00:00Z"},
    ],
)
def test_content_json_is_the_canonical_json_of_the_content(over: dict[str, str]) -> None:
    from consent.model import canonical_json, draft_of

    ev = parse_event(event(1, **over), KEYER)

    text = ev.content_json()

    assert text == canonical_json(ev.content()).decode("utf-8")
    assert ev.content_hash() == draft_of(1, ev)[3]


def test_subject_key_is_hmac_sha256_of_the_identifier() -> None:
    import hashlib
    import hmac

    for key in (b"k" * 32, b"x" * 64, b"y" * 65):
        keyer = SubjectKeyer(key)
        for ident in ("alice", "+8613800138000", "ünïcode-主体"):
            expected = hmac.new(key, b"pec-subject-v1\x00" + ident.encode(), hashlib.sha256)
            assert keyer.key_of(ident) == expected.hexdigest()
