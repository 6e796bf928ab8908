"""Generated brand and partner data with real-world messiness, planted signal and known truth.

A universe of people, each with latent traits (urgency to buy a car, purchasing power, interest
in cars) derived from a hash of the person's id, so any row of any table can be generated on its
own, chunk by chunk, in constant memory, and always agrees with every other table:

* brand leads (``brand_leads.csv``): the brand's historical leads with their outcomes — ``speed``
  (bought within 30 days), ``revenue`` (bought a premium tier), ``lost`` (bought elsewhere),
  ``premium`` (a premium-tier buyer within the year: the lookalike seed's outcome) — and a few
  weak brand-side features; phones and emails written every which way, some missing or broken;
* new brand leads (``brand_new_leads.csv``): same columns, outcomes unknown (to be scored);
* partner tags (``partner_tags.csv``): people the partner knows, shared with the brand in part —
  income level, car insurance and claims, car transactions, car-app usage, app interests,
  consumption preference, competitor purchases (brand, price tier, electric or not);
* consent events (``brand_consent.csv``): grants per purpose for the partner as recipient, with
  refusals, withdrawals (a third of the withdrawing people withdraw every purpose, the others one
  purpose each), expiries and grants to other recipients, in the consent ledger's import format;
* the partner's consent events (``partner_consent.csv``): its people's grants per purpose for the
  brand as recipient, with refusals and withdrawals, keyed by the partner's own ``person_id``
  (the first column of ``partner_tags.csv``, unrelated to the brand's ``lead_id``);
* ``truth.json``: sizes, overlaps, base rates and the coefficients of the planted signal.

The outcomes depend mostly on the partner's tags (through the latent traits) and only weakly on
the brand's own features, so a model that uses the partner's data beats one that does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BRAND_ID", "PARTNER_ID", "DatasetSpec", "GeneratedTables", "generate_dataset",
    "generate_tables",
]  # fmt: skip

PARTNER_ID = "partner-autodata"
BRAND_ID = "brand-acme"
OTHER_RECIPIENTS = ("partner-media", "partner-insurer")
OTHER_BRANDS = ("brand-rival", "brand-bank")
PURPOSES = (
    "marketing.lead_scoring",
    "marketing.lookalike",
    "marketing.enrichment",
    "analytics.aggregate",
    "third_party.matching",
    "analytics.overlap",
)
# CN mobile prefixes inside phonenumbers' valid mobile ranges
_PREFIXES = np.array(
    [130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 153, 155, 156, 157, 158, 159,
     177, 180, 181, 185, 186, 187, 188, 189, 199]
)  # fmt: skip
_DOMAINS = np.array(["qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "sina.com"])
_SURNAMES = np.array(["wang", "li", "zhang", "liu", "chen", "yang", "zhao", "huang", "zhou", "wu"])
_CITIES = np.array(["shanghai", "beijing", "shenzhen", "chengdu", "hangzhou", "wuhan"])
_COMPETITORS = np.array(["byd", "tesla", "toyota", "vw", "geely", "nio"])
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# data categories from the consent ledger's taxonomy (consent.model.DATA_CATEGORIES)
_CATEGORIES_MATCH = "identifier.phone;identifier.email"
_CATEGORIES_MODEL = (
    "identifier.phone;identifier.email;transaction.vehicle;income_level;insurance;interests"
)

# Planted signal: logits of the outcomes as functions of the latent traits
TRUTH = {
    "speed": {"intercept": -1.6, "urgency": 1.6, "car_interest": 0.6, "brand_noise": 0.25},
    "revenue": {"intercept": -1.4, "wealth": 1.7, "car_interest": 0.3, "brand_noise": 0.25},
    # the lookalike seed's outcome: strong on traits the partner's tags show (income, insurance,
    # app usage), so a partner-only model lifts it clearly (top decile about 4x at a 15 % rate)
    "premium": {"intercept": -3.5, "wealth": 2.6, "car_interest": 1.2, "brand_noise": 0.25},
}


@dataclass(frozen=True)
class DatasetSpec:
    """Sizes and rates of a generated dataset."""

    brand_leads: int = 20_000
    new_leads: int = 5_000
    partner_population: int = 50_000
    overlap: float = 0.6
    seed: int = 7
    refuse_rate: float = 0.07
    withdraw_rate: float = 0.03
    chunk_rows: int = 100_000

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError("overlap must be between 0 and 1")
        brand_people = self.brand_leads + self.new_leads
        if int(brand_people * self.overlap) > self.partner_population:
            raise ValueError("the partner population is smaller than the shared people")
        if brand_people + self.partner_population > 10**8:
            raise ValueError("at most 100 million people")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, vectorized: a bijective hash of 64-bit integers."""
    z = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def _uniform(person: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A uniform (0, 1) draw per person, fixed by (seed, stream, person)."""
    with np.errstate(over="ignore"):
        key = person.astype(np.uint64) * np.uint64(1_000_003) + np.uint64(
            (seed * 7919 + stream) & 0xFFFFFFFF
        ) * np.uint64(0x100000001B3)
    draws: np.ndarray = (_mix(key) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return draws + 0.5 / float(1 << 53)


def _normal(person: np.ndarray, seed: int, stream: int) -> np.ndarray:
    u1, u2 = _uniform(person, seed, 2 * stream), _uniform(person, seed, 2 * stream + 1)
    gaussian: np.ndarray = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return gaussian


def _choice(options: np.ndarray, u: np.ndarray) -> np.ndarray:
    return options[np.minimum((u * len(options)).astype(np.int64), len(options) - 1)]


@dataclass(frozen=True)
class _Traits:
    urgency: np.ndarray
    wealth: np.ndarray
    car_interest: np.ndarray


def _traits(person: np.ndarray, seed: int) -> _Traits:
    return _Traits(
        urgency=_normal(person, seed, 1),
        wealth=_normal(person, seed, 2),
        car_interest=_normal(person, seed, 3),
    )


def _phone_digits(person: np.ndarray, seed: int) -> np.ndarray:
    # an affine bijection on 10^8 keeps phones unique per person
    suffix = (person.astype(np.int64) * 48_271 + (seed % 1000) * 7 + 12_345) % 100_000_000
    prefix = _choice(_PREFIXES, _uniform(person, seed, 10))
    return np.char.add(prefix.astype(str), np.char.zfill(suffix.astype(str), 8))


def _messy_phones(digits: np.ndarray, u: np.ndarray) -> list[str]:
    out = []
    for d, style in zip(digits.tolist(), (u * 6).astype(int).tolist(), strict=True):
        if style == 1:
            d = f"+86 {d[:3]}-{d[3:7]}-{d[7:]}"
        elif style == 2:
            d = f"0086 {d}"
        elif style == 3:
            d = f"(+86){d}"
        elif style == 4:
            d = f"{d[:3]} {d[3:7]} {d[7:]}"
        elif style == 5:
            d = f"+86{d}"
        out.append(d)
    return out


def _emails(person: np.ndarray, seed: int) -> np.ndarray:
    surname = _choice(_SURNAMES, _uniform(person, seed, 11))
    domain = _choice(_DOMAINS, _uniform(person, seed, 12))
    return np.char.add(np.char.add(np.char.add(surname, "."), person.astype(str)), "@" + domain)


def _messy_emails(emails: np.ndarray, u: np.ndarray) -> list[str]:
    out = []
    for e, style in zip(emails.tolist(), (u * 4).astype(int).tolist(), strict=True):
        if style == 1:
            e = e.upper()
        elif style == 2:
            e = f"  {e} "
        elif style == 3:
            e = e.capitalize()
        out.append(e)
    return out


def _damage(values: list[str], u: np.ndarray, missing: float, broken: float) -> None:
    for i in np.flatnonzero(u < missing).tolist():
        values[i] = ""
    for i in np.flatnonzero((u >= missing) & (u < missing + broken)).tolist():
        values[i] = values[i][:5] if values[i] else "n/a"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _brand_chunk(person: np.ndarray, spec: DatasetSpec, *, labeled: bool) -> pd.DataFrame:
    import pandas as pd

    seed = spec.seed
    t = _traits(person, seed)
    noise = _normal(person, seed, 20)
    phones = _messy_phones(_phone_digits(person, seed), _uniform(person, seed, 21))
    emails = _messy_emails(_emails(person, seed), _uniform(person, seed, 22))
    _damage(phones, _uniform(person, seed, 23), missing=0.04, broken=0.01)
    _damage(emails, _uniform(person, seed, 24), missing=0.25, broken=0.01)
    created = _EPOCH + pd.to_timedelta((_uniform(person, seed, 25) * 300).astype(int), unit="D")
    frame = pd.DataFrame(
        {
            "lead_id": np.char.add("L", np.char.zfill(person.astype(str), 9)),
            "phone": phones,
            "email": emails,
            "created_at": created.strftime("%Y-%m-%d"),
            "city": _choice(_CITIES, _uniform(person, seed, 26)),
            "lead_source": _choice(
                np.array(["web", "dealer", "event", "app"]), _uniform(person, seed, 27)
            ),
            # weak brand-side features: noisy views of the traits
            "web_visits": np.maximum(0, np.round(3 + 1.0 * t.car_interest + 2.0 * noise)).astype(
                int
            ),
            "test_drive": (_uniform(person, seed, 28) < _sigmoid(-1.0 + 0.4 * t.urgency)).astype(
                int
            ),
            "days_since_contact": (_uniform(person, seed, 29) * 60).astype(int),
        }
    )
    if labeled:
        s, r = TRUTH["speed"], TRUTH["revenue"]
        speed_logit = s["intercept"] + s["urgency"] * t.urgency + s["car_interest"] * t.car_interest
        speed_logit += s["brand_noise"] * noise
        revenue_logit = r["intercept"] + r["wealth"] * t.wealth + r["car_interest"] * t.car_interest
        revenue_logit += r["brand_noise"] * noise
        speed = _uniform(person, seed, 30) < _sigmoid(speed_logit)
        revenue = speed & (_uniform(person, seed, 31) < _sigmoid(revenue_logit + 1.0))
        lost = ~speed & (_uniform(person, seed, 32) < 0.5)
        frame["speed"] = speed.astype(int)
        frame["revenue"] = revenue.astype(int)
        frame["lost"] = lost.astype(int)
        q = TRUTH["premium"]
        premium_logit = q["intercept"] + q["wealth"] * t.wealth + q["car_interest"] * t.car_interest
        premium_logit += q["brand_noise"] * noise
        frame["premium"] = (_uniform(person, seed, 33) < _sigmoid(premium_logit)).astype(int)
    return frame


def _partner_chunk(person: np.ndarray, spec: DatasetSpec) -> pd.DataFrame:
    import pandas as pd

    seed = spec.seed
    t = _traits(person, seed)
    phones = _messy_phones(_phone_digits(person, seed), _uniform(person, seed, 41))
    emails = _messy_emails(_emails(person, seed), _uniform(person, seed, 42))
    _damage(phones, _uniform(person, seed, 43), missing=0.02, broken=0.0)
    _damage(emails, _uniform(person, seed, 44), missing=0.45, broken=0.0)
    income = np.clip(np.round(3 + 1.1 * t.wealth + 0.5 * _normal(person, seed, 45)), 1, 5)
    insured = _uniform(person, seed, 46) < _sigmoid(-0.5 + 0.8 * t.car_interest + 0.4 * t.wealth)
    claims = np.where(insured, (_uniform(person, seed, 47) * 3).astype(int), 0)
    transactions = np.maximum(0, np.round(0.8 + 0.9 * t.urgency + 0.6 * _normal(person, seed, 48)))
    app_minutes = np.maximum(
        0, np.round(30 + 25 * t.car_interest + 20 * t.urgency + 15 * _normal(person, seed, 49))
    )
    competitor = np.where(
        _uniform(person, seed, 50) < 0.3, _choice(_COMPETITORS, _uniform(person, seed, 51)), ""
    )
    bought = competitor != ""
    interests = np.array(["auto", "travel", "finance", "games", "shopping"])
    consumption = _sigmoid(t.wealth + 0.3 * _normal(person, seed, 53))
    tier = _choice(np.array(["entry", "mid", "premium"]), _sigmoid(t.wealth))
    electric = (_uniform(person, seed, 54) < 0.45).astype(int).astype(str)
    return pd.DataFrame(
        {
            "person_id": _partner_subjects(person, seed),
            "mobile": phones,
            "email": emails,
            "income_level": income.astype(int),
            "car_insurance": insured.astype(int),
            "insurance_claims": claims.astype(int),
            "car_transactions": transactions.astype(int),
            "car_app_minutes": app_minutes.astype(int),
            "app_interest": _choice(interests, _uniform(person, seed, 52)),
            "consumption": _choice(np.array(["value", "mainstream", "premium"]), consumption),
            "competitor_brand": competitor,
            "competitor_tier": np.where(bought, tier, ""),
            "competitor_ev": np.where(bought, electric, ""),
        }
    )


def _partner_subjects(person: np.ndarray, seed: int) -> np.ndarray:
    """The partner's own subject ids: an affine bijection on 10^10, unrelated to ``lead_id``."""
    code = (person.astype(np.int64) * 2_654_435_761 + 1_000_003 * (seed % 1000 + 1)) % 10**10
    return np.char.add("P", np.char.zfill(code.astype(str), 10))


@dataclass(frozen=True)
class _ConsentSide:
    """Whose consent events: the subject ids, the recipient they grant, the notice, id prefix."""

    prefix: str
    recipient: str
    others: tuple[str, str]
    notice: str


_BRAND_SIDE = _ConsentSide("ev", PARTNER_ID, OTHER_RECIPIENTS, "brand-privacy-notice")
_PARTNER_SIDE = _ConsentSide("pe", BRAND_ID, OTHER_BRANDS, "partner-data-sharing-notice")


def _consent_chunk(
    person: np.ndarray, subjects: list[str], spec: DatasetSpec, side: _ConsentSide
) -> pd.DataFrame:
    """Consent events of one side's people, in the ledger's import format."""
    import pandas as pd

    seed = spec.seed
    rows: list[dict[str, str]] = []
    u_kind = _uniform(person, seed, 60)
    u_withdraw = _uniform(person, seed, 61)
    u_day = _uniform(person, seed, 62)
    u_other = _uniform(person, seed, 63)
    u_expired = _uniform(person, seed, 64)
    u_scope = _uniform(person, seed, 65)
    for i, (pid, subject) in enumerate(zip(person.tolist(), subjects, strict=True)):
        granted_at = _EPOCH + timedelta(days=int(u_day[i] * 200), seconds=pid % 86_400)
        if u_kind[i] < spec.refuse_rate:
            action, recipient = "refuse", side.recipient
        elif u_kind[i] < spec.refuse_rate + 0.08:
            action, recipient = "grant", side.others[int(u_other[i] * 2) % 2]
        else:
            action, recipient = "grant", side.recipient
        valid_until = granted_at + timedelta(days=365 if u_expired[i] > 0.03 else 30)
        for n, purpose in enumerate(PURPOSES):
            rows.append(
                {
                    "event_id": f"{side.prefix}-{pid:09d}-{n}",
                    "subject_id": subject,
                    "action": action,
                    "purpose": purpose,
                    "recipient": recipient,
                    "data_categories": _CATEGORIES_MODEL if n < 2 else _CATEGORIES_MATCH,
                    "legal_basis": "consent",
                    "notice_id": side.notice,
                    "notice_version": "3",
                    "method": "web_form" if pid % 3 else "app",
                    "occurred_at": granted_at.isoformat(),
                    "valid_until": valid_until.isoformat(),
                    "jurisdiction": "CN",
                }
            )
        if action == "grant" and recipient == side.recipient and u_withdraw[i] < spec.withdraw_rate:
            grants = rows[-len(PURPOSES) :]
            rows.extend(
                grants[n]
                | {
                    "event_id": f"{side.prefix}-{pid:09d}-w{n}",
                    "action": "withdraw",
                    "occurred_at": (granted_at + timedelta(days=40 + n)).isoformat(),
                    "valid_until": "",
                }
                for n in _withdrawn_purposes(float(u_scope[i]))
            )
    return pd.DataFrame(rows)


#: Share of withdrawing people who withdraw every purpose at once; the others withdraw one.
WITHDRAW_ALL_SHARE = 1 / 3


def _withdrawn_purposes(u: float) -> range:
    """Which purposes (indexes into PURPOSES) a withdrawing person withdraws, from a draw u."""
    if u < WITHDRAW_ALL_SHARE:
        return range(len(PURPOSES))
    one = min(
        len(PURPOSES) - 1, int((u - WITHDRAW_ALL_SHARE) / (1 - WITHDRAW_ALL_SHARE) * len(PURPOSES))
    )
    return range(one, one + 1)


def _brand_consent(person: np.ndarray, spec: DatasetSpec) -> pd.DataFrame:
    subjects = np.char.add("L", np.char.zfill(person.astype(str), 9)).tolist()
    return _consent_chunk(person, subjects, spec, _BRAND_SIDE)


def _partner_consent(rows: np.ndarray, spec: DatasetSpec) -> pd.DataFrame:
    person = _partner_people(rows, spec)
    # the partner's people decide independently of their choices as the brand's leads
    draws = person + np.int64(10**9)
    return _consent_chunk(draws, _partner_subjects(person, spec.seed).tolist(), spec,
                          _PARTNER_SIDE)  # fmt: skip


def _partner_people(rows: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Person id of each partner row: first the shared people, then the partner's own."""
    brand_people = spec.brand_leads + spec.new_leads
    shared = int(brand_people * spec.overlap)
    # a bijection of [0, brand_people) picks which brand people the partner knows
    step = 7_919 if brand_people % 7_919 else 7_927
    mapped = (rows * step + spec.seed) % max(brand_people, 1)
    return np.where(rows < shared, mapped, brand_people + (rows - shared))


def _chunks(total: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, total, size):
        yield np.arange(start, min(total, start + size), dtype=np.int64)


def generate_dataset(
    spec: DatasetSpec, out: Path, *, progress: Callable[[str, int, int], None] | None = None
) -> dict[str, Any]:
    """Write every table of the dataset to ``out``, chunk by chunk; returns the truth summary."""
    out.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda table, done, total: None)
    brand_people = spec.brand_leads + spec.new_leads
    counts = {"speed": 0, "revenue": 0, "lost": 0, "premium": 0}
    tables: list[tuple[str, int, Callable[[np.ndarray], pd.DataFrame]]] = [
        ("brand_leads.csv", spec.brand_leads, lambda rows: _brand_chunk(rows, spec, labeled=True)),
        (
            "brand_new_leads.csv",
            spec.new_leads,
            lambda rows: _brand_chunk(rows + spec.brand_leads, spec, labeled=False),
        ),
        (
            "partner_tags.csv",
            spec.partner_population,
            lambda rows: _partner_chunk(_partner_people(rows, spec), spec),
        ),
        ("brand_consent.csv", brand_people, lambda rows: _brand_consent(rows, spec)),
        ("partner_consent.csv", spec.partner_population, lambda rows: _partner_consent(rows, spec)),
    ]
    events = {"brand_consent.csv": 0, "partner_consent.csv": 0}
    for name, total, make in tables:
        partial = out / f".{name}.partial"
        with partial.open("w", encoding="utf-8", newline="") as handle:
            for index, rows in enumerate(_chunks(total, spec.chunk_rows)):
                frame = make(rows)
                frame.to_csv(handle, index=False, header=index == 0)
                if name == "brand_leads.csv":
                    for label in counts:
                        counts[label] += int(frame[label].sum())
                if name in events:
                    events[name] += len(frame)
                report(name, int(rows[-1]) + 1, total)
        partial.replace(out / name)
    truth = {
        "spec": asdict(spec),
        "brand_people": brand_people,
        "shared_people": int(brand_people * spec.overlap),
        "partner_id": PARTNER_ID,
        "brand_id": BRAND_ID,
        "base_rates": {k: round(v / max(spec.brand_leads, 1), 4) for k, v in counts.items()},
        "consent_events": events["brand_consent.csv"],
        "partner_consent_events": events["partner_consent.csv"],
        "signal": TRUTH,
        "notes": "outcomes depend on latent traits seen mostly through the partner's tags",
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth


@dataclass(frozen=True)
class GeneratedTables:
    """In-memory brand and partner tables (small sizes, for the demo and tests)."""

    brand: pd.DataFrame
    partner: pd.DataFrame
    shared_people: int


def generate_tables(
    brand_rows: int = 5_000, partner_rows: int = 20_000, *, overlap: float = 0.4, seed: int = 7
) -> GeneratedTables:
    """Brand leads (with outcomes) and partner tags in memory, from the same generator."""
    spec = DatasetSpec(
        brand_leads=brand_rows,
        new_leads=0,
        partner_population=partner_rows,
        overlap=overlap,
        seed=seed,
    )
    brand = _brand_chunk(np.arange(brand_rows, dtype=np.int64), spec, labeled=True)
    partner = _partner_chunk(_partner_people(np.arange(partner_rows, dtype=np.int64), spec), spec)
    return GeneratedTables(brand=brand, partner=partner, shared_people=int(brand_rows * overlap))
