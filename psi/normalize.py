"""Identifier normalization: both parties must turn the same person into the same bytes.

Three kinds of key:

* ``phone``: E.164 (``+8613812345678``). Numbers written without a country code are read in the
  default region (CN unless configured). ``13812345678``, ``+86 138-1234-5678``,
  ``0086 13812345678``, ``(+86)13812345678`` and ``138 1234 5678`` are one number. Numbers that
  ``phonenumbers`` does not consider valid are invalid keys.
* ``email``: trimmed and lower-cased; must look like ``local@domain.tld``. Provider alias rules
  (Gmail dots, ``+tag`` sub-addresses) only when enabled, because they merge addresses that other
  providers treat as different people.
* ``raw``: the value as it is (spaces included); only a value that is empty or all whitespace
  is invalid.

Invalid and empty keys are never matched; they are counted and reported with example row numbers
(1-based, header excluded), never with their values. The rule-set identifier
(:meth:`NormalizationRules.version`) is exchanged in the protocol handshake, and a mismatch stops
the run: two parties that normalize differently would silently miss matches.

pandas and numpy are imported inside the functions that take columns, so that a process that only
needs the rule set (the CLI parent) starts fast.

Performance: the common shapes of phone numbers in the default region are recognised by one
vectorised regular expression built from ``phonenumbers``' own metadata (mobile numbers); anything
else goes through ``phonenumbers.parse``. Tests check that both paths agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING

import phonenumbers

from psi.errors import InvalidKeyKind

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "KeyKind",
    "NormalizationRules",
    "NormalizedColumn",
    "infer_kind",
    "normalize_column",
    "normalize_email",
    "normalize_phone",
]

_SEPARATORS = re.compile(r"[\s\-().\u00a0\u3000/]")
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
# Providers whose alias rules are applied when ``email_aliases`` is on:
# domain -> (canonical domain, drop dots in the local part)
_ALIAS_PROVIDERS: dict[str, tuple[str, bool]] = {
    "gmail.com": ("gmail.com", True),
    "googlemail.com": ("gmail.com", True),
    "outlook.com": ("outlook.com", False),
    "hotmail.com": ("hotmail.com", False),
    "live.com": ("live.com", False),
    "icloud.com": ("icloud.com", False),
    "me.com": ("me.com", False),
    "protonmail.com": ("protonmail.com", False),
    "proton.me": ("proton.me", False),
    "fastmail.com": ("fastmail.com", False),
}
RULESET = "pec-norm/1"
MAX_EXAMPLES = 5
#: The characters Python's ``str.strip()`` removes (``str.isspace``): a raw key made only of
#: these is blank, the same on every path that reads keys.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


class KeyKind(StrEnum):
    """How a key column is normalized."""

    PHONE = "phone"
    EMAIL = "email"
    RAW = "raw"

    @classmethod
    def parse(cls, text: str) -> KeyKind:
        """Parse a kind name.

        Raises:
            InvalidKeyKind: if ``text`` is not one of phone, email, raw.
        """
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise InvalidKeyKind(
                f"unknown key kind {text!r}: use one of phone, email, raw"
            ) from None


def infer_kind(column: str) -> KeyKind:
    """Guess a key's kind from the words of its column name.

    phone: a word containing ``phone`` or starting with ``mobile``, ``telno``, ``telnum`` or
    ``telnr``, or the word ``tel`` (``phone``, ``Telephone``, ``mobileNo``, ``contact_tel``,
    ``tel1``, ``telnumber``); email: a word containing ``mail`` (``email``, ``E-Mail``,
    ``mail_addr``); else raw. Words, not substrings: ``hotel_id`` is raw (and so is ``hometel``:
    give the kind when a name is not this plain).
    """
    # words: runs of letters or of digits, also split where an upper-case letter follows a
    # lower-case one or a digit (camelCase)
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", column)
    words = re.findall(r"[a-z]+|[0-9]+", spaced.lower())
    if any(
        "phone" in w or w == "tel" or w.startswith(("mobile", "telno", "telnum", "telnr"))
        for w in words
    ):
        return KeyKind.PHONE
    if any("mail" in w for w in words):
        return KeyKind.EMAIL
    return KeyKind.RAW


@dataclass(frozen=True)
class NormalizationRules:
    """The rule set both parties apply; its :meth:`version` is part of the handshake."""

    default_region: str = "CN"
    email_aliases: bool = False

    def __post_init__(self) -> None:
        region = self.default_region.upper()
        if phonenumbers.country_code_for_region(region) == 0:
            raise ValueError(f"unknown phone region {self.default_region!r}")
        object.__setattr__(self, "default_region", region)

    def version(self, kinds: tuple[KeyKind, ...]) -> str:
        """The identifier of the rules that apply to these key kinds."""
        parts = [RULESET]
        if KeyKind.PHONE in kinds:
            parts.append(f"phone:region={self.default_region},metadata={phonenumbers.__version__}")
        if KeyKind.EMAIL in kinds:
            parts.append(f"email:aliases={'on' if self.email_aliases else 'off'}")
        if KeyKind.RAW in kinds:
            parts.append("raw:as-is,blank-invalid")
        return ";".join(parts)

    @cached_property
    def _fast_phone(self) -> tuple[re.Pattern[str], str]:
        code = phonenumbers.country_code_for_region(self.default_region)
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(self.default_region)
        mobile = metadata.mobile.national_number_pattern if metadata and metadata.mobile else None
        if not mobile:  # pragma: no cover - every region we support has mobile metadata
            return re.compile(r"(?!)"), f"+{code}"
        pattern = re.compile(rf"(?:\+{code}|00{code}|{code})?({mobile})")
        return pattern, f"+{code}"


@dataclass(frozen=True)
class NormalizedColumn:
    """A key column after normalization: one value per row, ``None`` where invalid or empty."""

    values: pd.Series
    invalid_count: int
    invalid_examples: tuple[int, ...]


def normalize_phone(value: str, rules: NormalizationRules) -> str | None:
    """One phone number to E.164, or None when it is empty or not a valid number."""
    text = value.strip()
    if not text:
        return None
    pattern, prefix = rules._fast_phone
    compact = _SEPARATORS.sub("", text)
    hit = pattern.fullmatch(compact)
    if hit:
        return prefix + hit.group(1)
    try:
        number = phonenumbers.parse(text, rules.default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalize_email(value: str, rules: NormalizationRules) -> str | None:
    """One email address trimmed and lower-cased (aliases folded if enabled), or None."""
    text = value.strip().lower()
    if not _EMAIL_SHAPE.fullmatch(text):
        return None
    if rules.email_aliases:
        local, domain = text.rsplit("@", 1)
        provider = _ALIAS_PROVIDERS.get(domain)
        if provider is not None:
            canonical, drop_dots = provider
            local = local.split("+", 1)[0]
            if drop_dots:
                local = local.replace(".", "")
            if not local:
                return None
            text = f"{local}@{canonical}"
    return text


def _as_text(series: pd.Series) -> pd.Series:
    """Cells as str, with missing cells as empty strings."""
    text = series.astype(object).where(series.notna(), "")
    return text.map(lambda cell: cell if isinstance(cell, str) else str(cell))


def normalize_column(
    series: pd.Series, kind: KeyKind, rules: NormalizationRules
) -> NormalizedColumn:
    """Normalize a whole key column; invalid and empty cells become ``None`` and are counted."""
    import numpy as np
    import pandas as pd

    if kind is KeyKind.RAW and isinstance(series.dtype, pd.StringDtype):
        # already text (as tables are read) and used as is: no per-cell Python loop
        text = series.fillna("")
    else:
        # str cells (Python's own string and regex semantics for the emails and phones)
        text = _as_text(series)
    if kind is KeyKind.RAW:
        # the characters named: pandas' Arrow-backed strings strip a different set by default
        out = text.where(text.str.strip(WHITESPACE) != "", None)
    elif kind is KeyKind.EMAIL:
        stripped = text.str.strip().str.lower()
        shaped = stripped.str.fullmatch(_EMAIL_SHAPE.pattern).fillna(False).astype(bool)
        if rules.email_aliases:
            out = stripped.where(shaped, None).map(
                lambda v: normalize_email(v, rules) if isinstance(v, str) else None
            )
        else:
            out = stripped.where(shaped, None)
    else:
        pattern, prefix = rules._fast_phone
        compact = text.str.replace(_SEPARATORS.pattern, "", regex=True)
        national = compact.str.extract(f"^{pattern.pattern}$", expand=False)
        fast = national.notna()
        out = pd.Series(np.full(len(text), None, dtype=object), index=text.index)
        out[fast] = prefix + national[fast].astype(object)
        slow = ~fast & (text.str.strip() != "")
        if slow.any():
            out[slow] = text[slow].map(lambda v: normalize_phone(v, rules))
    cells = out.to_numpy(dtype=object, copy=True)
    cells[pd.isna(cells)] = None  # NaN and pd.NA of the vectorised paths become None
    out = pd.Series(cells, dtype=object)
    invalid = out.isna().to_numpy()
    positions = np.flatnonzero(invalid)
    return NormalizedColumn(
        values=out.reset_index(drop=True),
        invalid_count=int(positions.size),
        invalid_examples=tuple(int(p) + 1 for p in positions[:MAX_EXAMPLES]),
    )
