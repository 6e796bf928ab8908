"""Generated brand and partner tables with real-world messiness and a known ground truth.

The brand holds a CRM of customers (phone and email, written every which way, some missing or
broken); the partner holds a tag table of people it knows (income level, car insurance, car
transactions, app interest). Some people are in both, some matched only by phone, some only by
email. Everything is derived from a seed, so a run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["GeneratedTables", "generate_tables"]

# CN mobile prefixes that phonenumbers' metadata treats as valid mobile ranges
_PREFIXES = np.array(
    [
        130,
        131,
        132,
        133,
        135,
        136,
        137,
        138,
        139,
        150,
        151,
        152,
        153,
        155,
        156,
        157,
        158,
        159,
        177,
        180,
        181,
        185,
        186,
        187,
        188,
        189,
        199,
    ]
)
_DOMAINS = np.array(["qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "sina.com"])
_SURNAMES = np.array(["wang", "li", "zhang", "liu", "chen", "yang", "zhao", "huang", "zhou", "wu"])


@dataclass(frozen=True)
class GeneratedTables:
    """The two tables and the facts a PSI over them must reproduce."""

    brand: pd.DataFrame
    partner: pd.DataFrame
    shared_people: int


def _phones(rng: np.random.Generator, n: int) -> np.ndarray:
    prefix = rng.choice(_PREFIXES, size=n)
    rest = rng.integers(0, 10**8, size=n)
    return np.array([f"{p}{r:08d}" for p, r in zip(prefix, rest, strict=True)])


def _messy_phone(rng: np.random.Generator, digits: np.ndarray) -> list[str]:
    styles = rng.integers(0, 6, size=len(digits))
    out = []
    for d, style in zip(digits, styles, strict=True):
        if style == 0:
            out.append(d)
        elif style == 1:
            out.append(f"+86 {d[:3]}-{d[3:7]}-{d[7:]}")
        elif style == 2:
            out.append(f"0086 {d}")
        elif style == 3:
            out.append(f"(+86){d}")
        elif style == 4:
            out.append(f"{d[:3]} {d[3:7]} {d[7:]}")
        else:
            out.append(f"+86{d}")
    return out


def _messy_email(rng: np.random.Generator, emails: np.ndarray) -> list[str]:
    styles = rng.integers(0, 4, size=len(emails))
    out = []
    for e, style in zip(emails, styles, strict=True):
        if style == 1:
            out.append(e.upper())
        elif style == 2:
            out.append(f"  {e} ")
        elif style == 3:
            out.append(e.capitalize())
        else:
            out.append(e)
    return out


def _damage(rng: np.random.Generator, values: list[str], missing: float, broken: float) -> None:
    draw = rng.random(len(values))
    for i in np.flatnonzero(draw < missing):
        values[i] = ""
    for i in np.flatnonzero((draw >= missing) & (draw < missing + broken)):
        values[i] = values[i][:5] if values[i] else "n/a"


def generate_tables(
    brand_rows: int = 5_000,
    partner_rows: int = 20_000,
    *,
    overlap: float = 0.4,
    seed: int = 7,
) -> GeneratedTables:
    """Brand CRM and partner tag tables; ``overlap`` of the brand's people are partner people."""
    rng = np.random.default_rng(seed)
    shared = int(brand_rows * overlap)
    people = brand_rows + partner_rows - shared
    phones = _phones(rng, people)
    surnames = rng.choice(_SURNAMES, size=people)
    emails = np.array(
        [
            f"{s}.{i}@{d}"
            for i, (s, d) in enumerate(
                zip(surnames, rng.choice(_DOMAINS, size=people), strict=True)
            )
        ]
    )
    brand_people = np.arange(brand_rows)
    partner_people = np.concatenate([np.arange(shared), np.arange(brand_rows, people)])
    rng.shuffle(partner_people)

    brand_phone = _messy_phone(rng, phones[brand_people])
    brand_email = _messy_email(rng, emails[brand_people])
    _damage(rng, brand_phone, missing=0.05, broken=0.01)
    _damage(rng, brand_email, missing=0.20, broken=0.01)
    brand = pd.DataFrame(
        {
            "customer_id": [f"C{i:07d}" for i in range(brand_rows)],
            "phone": brand_phone,
            "email": brand_email,
            "city": rng.choice(["shanghai", "beijing", "shenzhen", "chengdu"], size=brand_rows),
            "lead_source": rng.choice(["web", "dealer", "event", "app"], size=brand_rows),
        }
    )
    partner_phone = _messy_phone(rng, phones[partner_people])
    partner_email = _messy_email(rng, emails[partner_people])
    _damage(rng, partner_phone, missing=0.03, broken=0.0)
    _damage(rng, partner_email, missing=0.40, broken=0.0)
    partner = pd.DataFrame(
        {
            "mobile": partner_phone,
            "email": partner_email,
            "income_level": rng.choice(
                ["low", "mid", "high"], size=partner_rows, p=[0.4, 0.45, 0.15]
            ),
            "car_insurance": rng.choice(["yes", "no"], size=partner_rows, p=[0.35, 0.65]),
            "car_transactions": rng.integers(0, 5, size=partner_rows).astype(str),
            "app_interest": rng.choice(["auto", "travel", "finance", "games"], size=partner_rows),
        }
    )
    return GeneratedTables(brand=brand, partner=partner, shared_people=shared)
