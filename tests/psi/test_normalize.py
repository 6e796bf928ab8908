import numpy as np
import pandas as pd
import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from psi.errors import InvalidKeyKind
from psi.normalize import (
    WHITESPACE,
    KeyKind,
    NormalizationRules,
    infer_kind,
    normalize_column,
    normalize_email,
    normalize_phone,
)
from psi.prepare import prepare_input, prepare_raw_input

pytestmark = pytest.mark.unit

RULES = NormalizationRules()

SAME_NUMBER = [
    "13812345678",
    "+86 138-1234-5678",
    "0086 13812345678",
    "(+86)13812345678",
    "138 1234 5678",
]


@pytest.mark.parametrize("text", SAME_NUMBER)
def test_issue_phone_examples_are_one_number(text: str) -> None:
    assert normalize_phone(text, RULES) == "+8613812345678"


def test_phone_column_matches_scalar_and_counts_invalid() -> None:
    series = pd.Series([*SAME_NUMBER, "", None, "not a phone", "12345", "010 12345678"])
    column = normalize_column(series, KeyKind.PHONE, RULES)
    assert column.values.tolist() == ["+8613812345678"] * 5 + [None] * 4 + ["+861012345678"]
    assert column.invalid_count == 4
    assert column.invalid_examples == (6, 7, 8, 9)


def test_foreign_numbers_and_other_regions() -> None:
    assert normalize_phone("+1 650 253 0000", RULES) == "+16502530000"
    us = NormalizationRules(default_region="us")
    assert us.default_region == "US"
    assert normalize_phone("(650) 253-0000", us) == "+16502530000"
    with pytest.raises(ValueError):
        NormalizationRules(default_region="XX")


formats = st.sampled_from(
    [
        "{n}",
        "+86{n}",
        "+86 {a}-{b}-{c}",
        "0086 {n}",
        "(+86){n}",
        "{a} {b} {c}",
        "86{n}",
        "  {a}.{b}.{c} ",
        "+86 ({a}) {b} {c}",
        "0{n}",
        "+86 0{n}",
        "{n}9",
    ]
)


@given(st.from_regex(r"1[0-9]{10}", fullmatch=True), formats)
def test_fast_path_agrees_with_phonenumbers(digits: str, fmt: str) -> None:
    text = fmt.format(n=digits, a=digits[:3], b=digits[3:7], c=digits[7:])
    vectorised = normalize_column(pd.Series([text]), KeyKind.PHONE, RULES).values[0]
    try:
        number = phonenumbers.parse(text, "CN")
        expected = (
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            if phonenumbers.is_valid_number(number)
            else None
        )
    except phonenumbers.NumberParseException:
        expected = None
    assert vectorised == expected
    assert normalize_phone(text, RULES) == expected


def test_email_trim_and_lower() -> None:
    assert normalize_email("  Foo.Bar@Example.COM ", RULES) == "foo.bar@example.com"
    for bad in ["", "no-at-sign", "a@b", "a b@c.com", "@x.com", "a@@x.com", "a@x..com"]:
        assert normalize_email(bad, RULES) is None, bad


def test_email_aliases_are_opt_in() -> None:
    aliases = NormalizationRules(email_aliases=True)
    assert normalize_email("F.o.o+ads@GoogleMail.com", RULES) == "f.o.o+ads@googlemail.com"
    assert normalize_email("F.o.o+ads@GoogleMail.com", aliases) == "foo@gmail.com"
    assert normalize_email("a.b+x@outlook.com", aliases) == "a.b@outlook.com"
    assert normalize_email("a.b+x@example.com", aliases) == "a.b+x@example.com"
    column = normalize_column(pd.Series(["a.b+x@gmail.com", "bad"]), KeyKind.EMAIL, aliases)
    assert column.values.tolist() == ["ab@gmail.com", None]


def test_raw_keys_are_as_is() -> None:
    cells = [" ID-1 ", "", None, "00123", "   ", "\t", "\u3000"]
    column = normalize_column(pd.Series(cells), KeyKind.RAW, RULES)
    assert column.values.tolist() == [" ID-1 ", None, None, "00123", None, None, None]
    assert column.invalid_count == 5
    assert column.invalid_examples == (2, 3, 5, 6, 7)


def test_whitespace_is_what_python_strips() -> None:
    everything = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    assert everything == WHITESPACE


# ordinary characters and every kind of whitespace, which the paths must agree on
SPACEY = st.text(alphabet=st.sampled_from(["a", "0", "-", *WHITESPACE]), max_size=4)


@given(st.lists(SPACEY, max_size=30))
def test_blank_raw_keys_are_the_same_on_every_path(cells: list[str]) -> None:
    plain, plain_reports = prepare_raw_input([("k", cells)])
    for dtype in ("str", "string", object):
        data, reports = prepare_input(
            [pd.Series(cells, name="k", dtype=dtype)], [KeyKind.RAW], RULES
        )
        assert data.slot_values == plain.slot_values, dtype
        assert np.array_equal(data.row_codes, plain.row_codes), dtype
        assert reports == plain_reports, dtype
    assert [bool(code < 0) for code in plain.row_codes[:, 0]] == [not c.strip() for c in cells]


@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=30))
def test_raw_keys_are_the_same_from_a_text_column_and_an_object_column(
    cells: list[str | None],
) -> None:
    # tables are read as pandas' str dtype, which takes a loop-free path
    text = normalize_column(pd.Series(cells, dtype="str"), KeyKind.RAW, RULES)
    objects = normalize_column(pd.Series(cells, dtype=object), KeyKind.RAW, RULES)
    assert text.values.tolist() == objects.values.tolist()
    assert (text.invalid_count, text.invalid_examples) == (
        objects.invalid_count,
        objects.invalid_examples,
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("phone", KeyKind.PHONE),
        ("Mobile", KeyKind.PHONE),
        ("tel_no", KeyKind.PHONE),
        ("email", KeyKind.EMAIL),
        ("e_mail", KeyKind.EMAIL),
        ("device_id", KeyKind.RAW),
        ("PhoneNumber", KeyKind.PHONE),
        ("mobileNo", KeyKind.PHONE),
        ("contact_tel", KeyKind.PHONE),
        ("Telephone", KeyKind.PHONE),
        ("E-Mail", KeyKind.EMAIL),
        ("userEmail", KeyKind.EMAIL),
        ("hotel_id", KeyKind.RAW),  # "tel" inside a word is not a phone
        ("tel1", KeyKind.PHONE),
        ("telnumber", KeyKind.PHONE),
        ("email2", KeyKind.EMAIL),
        ("television", KeyKind.RAW),
        ("motel", KeyKind.RAW),
        ("id", KeyKind.RAW),
    ],
)
def test_kind_inference_by_words(name: str, kind: KeyKind) -> None:
    assert infer_kind(name) is kind


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(InvalidKeyKind, match="fax"):
        KeyKind.parse("fax")


def test_rules_version_names_what_applies() -> None:
    kinds = (KeyKind.PHONE, KeyKind.EMAIL)
    version = RULES.version(kinds)
    assert "region=CN" in version and "aliases=off" in version
    assert NormalizationRules("US").version(kinds) != version
    assert NormalizationRules(email_aliases=True).version(kinds) != version
    assert "region" not in RULES.version((KeyKind.RAW,))
