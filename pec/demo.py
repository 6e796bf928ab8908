"""``pec demo``: what a newcomer runs first.

Generates a brand leads table and a partner tag table, then runs four clean-room jobs between
them, each as two party processes that exchange only protocol messages:

1. overlap check: PSI cardinality on phone OR email; neither side learns any row;
2. tag enrichment: labeled PSI; the brand receives the partner's tags for its matched customers;
3. audience matching: only the partner (media side) learns the matched set, for delivery;
4. aggregate portrait: of the brand's lost leads, how many bought which competitor brand
   (intersection-aggregate with Paillier; small cells suppressed).

Each job's outputs land in their own folder under ``--out``; ``demo.json`` sums them up. The
expected overlap is recomputed from the plaintext tables (which only a demo has side by side) and
printed next to the PSI's answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from pec.aggregate_local import AggregateOptions, run_aggregate_local
from pec.datagen import generate_tables
from pec.psi_local import KeyPair, PsiLocalOptions, run_psi_local
from psi.normalize import KeyKind, NormalizationRules, normalize_column
from psi.protocol import Reveal

__all__ = ["expected_overlap", "run_demo"]

_KEYS = (KeyPair("phone", "mobile", KeyKind.PHONE), KeyPair("email", "email", KeyKind.EMAIL))


def expected_overlap(brand: pd.DataFrame, partner: pd.DataFrame) -> int:
    """Brand rows that share a valid phone or email with some partner row (plaintext check)."""
    rules = NormalizationRules()
    hit = pd.Series(False, index=range(len(brand)))
    for key in _KEYS:
        mine = normalize_column(brand[key.left], key.kind, rules).values
        theirs = set(normalize_column(partner[key.right], key.kind, rules).values.dropna())
        hit |= mine.isin(theirs) & mine.notna()
    return int(hit.sum())


def run_demo(
    out: Path,
    *,
    brand_rows: int = 5_000,
    partner_rows: int = 20_000,
    seed: int = 7,
    progress: Callable[[str, str, int, int], None] | None = None,
    announce: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Generate the data and run the three jobs; returns (and writes) the demo summary."""
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    data.mkdir(exist_ok=True)
    tables = generate_tables(brand_rows, partner_rows, seed=seed)
    brand_csv, partner_csv = data / "brand_leads.csv", data / "partner_tags.csv"
    tables.brand.to_csv(brand_csv, index=False)
    tables.partner.to_csv(partner_csv, index=False)
    expected = expected_overlap(tables.brand, tables.partner)
    announce(
        f"generated {brand_rows:,} brand leads and {partner_rows:,} partner people "
        f"in {data} (expected overlap: {expected:,} brand customers)"
    )
    jobs = {
        "overlap": PsiLocalOptions(keys=_KEYS, reveal=Reveal.COUNT),
        "enrichment": PsiLocalOptions(
            keys=_KEYS, reveal=Reveal.LEFT, payload=("income_level", "car_insurance")
        ),
        "matching": PsiLocalOptions(keys=_KEYS, reveal=Reveal.RIGHT),
    }
    summaries: dict[str, Any] = {}
    lost_csv = data / "brand_lost_leads.csv"
    tables.brand[tables.brand["lost"].astype(int) == 1].to_csv(lost_csv, index=False)
    for name, options in jobs.items():
        announce(f"job {name}: reveal={options.reveal.value}")
        summaries[name] = run_psi_local(
            brand_csv, partner_csv, out / name, options, progress=progress
        )
    announce("job aggregate: lost leads x competitor brand")
    aggregate_options = AggregateOptions(key=_KEYS[0], group="competitor_brand", min_cell=20)
    summaries["aggregate"] = run_aggregate_local(
        lost_csv, partner_csv, out / "aggregate", aggregate_options
    )
    result = {
        "brand_rows": brand_rows,
        "partner_rows": partner_rows,
        "expected_overlap": expected,
        "overlap": summaries["overlap"]["intersection"],
        "overlap_per_key": summaries["overlap"]["per_key"],
        "enriched_rows": summaries["enrichment"]["intersection"],
        "matched_partner_rows": summaries["matching"]["intersection"],
        "lost_leads": summaries["aggregate"]["brand_rows"],
        "lost_leads_known": summaries["aggregate"]["intersection"],
        "competitor_cells": summaries["aggregate"]["cells"],
        "invalid_keys": {
            "brand": summaries["overlap"]["left_invalid"],
            "partner": summaries["overlap"]["right_invalid"],
        },
        "seconds": {name: s["seconds"] for name, s in summaries.items()},
        "outputs": {name: str(out / name) for name in summaries},
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
