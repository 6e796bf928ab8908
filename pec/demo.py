"""``pec demo``: what a newcomer runs first.

1. Generates a dataset (:mod:`pec.datagen`): the brand's historical leads with outcomes, its new
   leads, the partner's tag table and the brand's consent events.
2. Imports the consent events into the brand's ledger (``DIR/brand-node``) and, for each job,
   cuts the brand's input down to the cohort consented for the job's purpose and the partner as
   recipient (:func:`consent.cut.cut_tables`); exclusions are counted per reason.
3. Runs the clean-room jobs, each between two party processes that exchange only protocol
   messages:

   * overlap: PSI cardinality on phone OR email; neither side learns any row;
   * lead scoring: vertical federated logistic regression over a Flower deployment (SuperLink,
     SuperNode, the partner's own process), Paillier-encrypted gradients; "speed" and "revenue"
     models, then a 0-1 score per new lead per model (:mod:`federated.scoring`);
   * lookalike: a model on the partner's tags trained with the brand's "premium" outcome as the
     seed; the partner scores its population, the brand sees the score distribution and takes
     the best tenth of the people it does not have; the audience stays with the partner;
   * enrichment: labeled PSI; the brand receives the partner's tags for its matched customers;
   * aggregate: of the brand's lost leads, how many bought which competitor brand (PSI +
     Paillier; small cells suppressed);
   * matching: only the partner (media side) learns the matched set, for delivery.
4. Writes ``demo.json``, one audit manifest per job (``DIR/<job>/manifest.json``) and a
   self-contained ``report.html`` (:mod:`pec.report`).

Each job's outputs are in their own folder under ``DIR``. The expected overlap is recomputed from
the plaintext tables (which only a demo has side by side) and printed next to the PSI's answer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from consent.cut import ConsentedTables, cut_tables
from consent.ledger import ConsentLedger
from pec.aggregate_local import AggregateOptions, run_aggregate_local
from pec.datagen import PARTNER_ID, DatasetSpec, generate_dataset
from pec.psi_local import KeyPair, PsiLocalOptions, run_psi_local
from pec.vfl_local import VflLocalOptions, run_vfl_local
from psi.normalize import KeyKind, NormalizationRules, normalize_column
from psi.protocol import Reveal

__all__ = ["JOB_PURPOSES", "expected_overlap", "run_demo"]

_KEYS = (KeyPair("phone", "mobile", KeyKind.PHONE), KeyPair("email", "email", KeyKind.EMAIL))
JOB_PURPOSES = {
    "overlap": "analytics.overlap",
    "lead_scoring": "marketing.lead_scoring",
    "lookalike": "marketing.lookalike",
    "enrichment": "marketing.enrichment",
    "aggregate": "analytics.aggregate",
    "matching": "third_party.matching",
}
"""The purpose each job's brand input is consented for (recipient: the partner)."""
BRAND_FEATURES = ("web_visits", "test_drive", "days_since_contact")
PARTNER_FEATURES = (
    "income_level", "car_insurance", "insurance_claims", "car_transactions", "car_app_minutes",
)  # fmt: skip
LABELS = ("speed", "revenue")
SEED_LABEL = "premium"
ENRICHMENT_TAGS = ("income_level", "car_insurance")

Progress = Callable[[str, str, int, int], None]


def expected_overlap(brand: pd.DataFrame, partner: pd.DataFrame) -> int:
    """Brand rows that share a valid phone or email with some partner row (plaintext check)."""
    rules = NormalizationRules()
    hit = pd.Series(False, index=range(len(brand)))
    for key in _KEYS:
        mine = normalize_column(brand[key.left], key.kind, rules).values.reset_index(drop=True)
        theirs = set(normalize_column(partner[key.right], key.kind, rules).values.dropna())
        hit |= mine.isin(theirs) & mine.notna()
    return int(hit.sum())


def _digest(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return {"sha256": sha.hexdigest(), "bytes": path.stat().st_size}


def _manifest(
    job: str,
    folder: Path,
    consented: ConsentedTables,
    settings: dict[str, Any],
    started: datetime,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """The job's audit record: purpose, consent snapshot and exclusions, settings, outputs."""
    outputs = {
        str(p.relative_to(folder)): _digest(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "input" not in p.relative_to(folder).parts and p.name != "manifest.json"
    }
    manifest = {
        "type": "pec.demo.job.manifest",
        "job": job,
        "purpose": JOB_PURPOSES[job],
        "brand": "brand (demo)",
        "partner": PARTNER_ID,
        "consent": consented.summary(),
        "settings": settings,
        "outputs": outputs,
        "seconds": summary.get("seconds_end_to_end", summary.get("seconds")),
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def run_demo(
    out: Path,
    *,
    brand_rows: int = 10_000,
    new_leads: int = 2_000,
    partner_rows: int = 30_000,
    seed: int = 7,
    key_bits: int = 2048,
    progress: Progress | None = None,
    announce: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Generate the data, import consent, run the jobs, write the report; returns the summary."""
    note = progress or (lambda role, stage, done, total: None)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    spec = DatasetSpec(
        brand_leads=brand_rows, new_leads=new_leads, partner_population=partner_rows, seed=seed
    )
    truth = generate_dataset(spec, data, progress=lambda t, d, n: note("data", t, d, n))
    partner_csv = data / "partner_tags.csv"
    announce(
        f"generated {brand_rows:,} brand leads, {new_leads:,} new leads, {partner_rows:,} partner "
        f"people and {truth['consent_events']:,} consent events in {data}"
    )

    # the brand's consent ledger: a fresh node home per demo run
    home = out / "brand-node"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    ledger = ConsentLedger.open(home)
    try:
        imported = ledger.import_file(data / "brand_consent.csv")
        verified = ledger.verify()
        announce(
            f"consent ledger: {imported.appended:,} events imported, verified "
            f"({'ok' if verified.ok else 'FAILED'}), tree size {verified.entries_checked:,}"
        )
        consents: dict[str, ConsentedTables] = {}
        for job, purpose in JOB_PURPOSES.items():
            sources = [(data / "brand_leads.csv", out / job / "input" / "brand_leads.csv")]
            if job == "lead_scoring":
                sources.append(
                    (data / "brand_new_leads.csv", out / job / "input" / "brand_new_leads.csv")
                )
            consents[job] = cut_tables(ledger, purpose, PARTNER_ID, sources, "lead_id")
    finally:
        ledger.close()
    partner = pd.read_csv(partner_csv, dtype=str, keep_default_na=False)
    summaries: dict[str, Any] = {}
    manifests: dict[str, Any] = {}

    def finish(job: str, settings: dict[str, Any], started: datetime, summary: Any) -> None:
        summaries[job] = summary
        manifests[job] = _manifest(job, out / job, consents[job], settings, started, summary)

    # 1. overlap
    started = datetime.now(UTC)
    brand_in = out / "overlap" / "input" / "brand_leads.csv"
    expected = expected_overlap(pd.read_csv(brand_in, dtype=str, keep_default_na=False), partner)
    announce(f"job overlap: PSI cardinality on phone OR email (expected {expected:,})")
    overlap = run_psi_local(brand_in, partner_csv, out / "overlap" / "result",
                            PsiLocalOptions(keys=_KEYS, reveal=Reveal.COUNT),
                            progress=note)  # fmt: skip
    finish("overlap", {"keys": "phone OR email", "reveal": "count"}, started, overlap)

    # 2. lead scoring
    started = datetime.now(UTC)
    folder = out / "lead_scoring"
    announce("job lead_scoring: VFL over Flower + Paillier, models speed and revenue")
    options = VflLocalOptions(
        id_column="phone", partner_id_column="mobile", id_kind="phone", labels=LABELS,
        brand_features=BRAND_FEATURES, partner_features=PARTNER_FEATURES, key_bits=key_bits,
        seed=seed,
    )  # fmt: skip
    new_in = folder / "input" / "brand_new_leads.csv"
    metrics = run_vfl_local(
        folder / "input" / "brand_leads.csv", partner_csv, folder / "result", options,
        test_brand=new_in, test_partner=partner_csv, progress=note,
    )  # fmt: skip
    from federated.scoring import score_all_leads

    new = pd.read_csv(new_in, dtype=str, keep_default_na=False)
    scores = score_all_leads(folder / "result", new, "phone", keep=("lead_id",))
    scores.to_csv(folder / "result" / "new_lead_scores.csv", index=False)
    metrics["new_leads_scored"] = len(scores)
    metrics["new_leads_matched"] = int(scores["matched"].sum())
    finish("lead_scoring", {"labels": list(LABELS), "brand_features": list(BRAND_FEATURES),
                            "partner_features": list(PARTNER_FEATURES), "key_bits": key_bits,
                            "id": "phone"}, started, metrics)  # fmt: skip

    # 3. lookalike: the brand's premium buyers as the seed, the best tenth of the partner's people
    started = datetime.now(UTC)
    from federated.lookalike import AudienceChoice
    from pec.lookalike_local import LookalikeLocalOptions, run_lookalike_local

    audience_size = max(partner_rows // 10, 1)
    announce(f"job lookalike: seed = {SEED_LABEL} buyers, audience of {audience_size:,}")
    lookalike_options = LookalikeLocalOptions(
        id_column="phone", partner_id_column="mobile", id_kind="phone", label=SEED_LABEL,
        audience=AudienceChoice(size=audience_size), partner_features=PARTNER_FEATURES,
        key_bits=key_bits, seed=seed,
    )  # fmt: skip
    lookalike = run_lookalike_local(
        out / "lookalike" / "input" / "brand_leads.csv", partner_csv,
        out / "lookalike" / "result", lookalike_options, progress=note,
    )  # fmt: skip
    finish("lookalike", {"label": SEED_LABEL, "audience_size": audience_size,
                         "partner_features": list(PARTNER_FEATURES), "key_bits": key_bits},
           started, lookalike)  # fmt: skip

    # 4. enrichment
    started = datetime.now(UTC)
    announce(f"job enrichment: labeled PSI, tags {', '.join(ENRICHMENT_TAGS)}")
    enrichment = run_psi_local(
        out / "enrichment" / "input" / "brand_leads.csv", partner_csv,
        out / "enrichment" / "result",
        PsiLocalOptions(keys=_KEYS, reveal=Reveal.LEFT, payload=ENRICHMENT_TAGS), progress=note,
    )  # fmt: skip
    finish("enrichment", {"keys": "phone OR email", "tags": list(ENRICHMENT_TAGS)}, started,
           enrichment)  # fmt: skip

    # 5. aggregate over the brand's lost leads
    started = datetime.now(UTC)
    announce("job aggregate: lost leads x competitor brand")
    agg_in = out / "aggregate" / "input"
    leads = pd.read_csv(agg_in / "brand_leads.csv", dtype=str, keep_default_na=False)
    leads[leads["lost"] == "1"].to_csv(agg_in / "brand_lost_leads.csv", index=False)
    aggregate = run_aggregate_local(
        agg_in / "brand_lost_leads.csv", partner_csv, out / "aggregate" / "result",
        AggregateOptions(key=_KEYS[0], group="competitor_brand", min_cell=20, key_bits=key_bits),
    )  # fmt: skip
    finish("aggregate", {"key": "phone", "group": "competitor_brand", "min_cell": 20}, started,
           aggregate)  # fmt: skip

    # 6. matching
    started = datetime.now(UTC)
    announce("job matching: only the partner learns the matched set")
    matching = run_psi_local(
        out / "matching" / "input" / "brand_leads.csv", partner_csv, out / "matching" / "result",
        PsiLocalOptions(keys=_KEYS, reveal=Reveal.RIGHT), progress=note,
    )  # fmt: skip
    finish("matching", {"keys": "phone OR email", "reveal": "partner"}, started, matching)

    result = {
        "brand_rows": brand_rows,
        "new_leads": new_leads,
        "partner_rows": partner_rows,
        "consent": {
            "events": imported.appended,
            "verified": verified.ok,
            "jobs": {job: c.summary() for job, c in consents.items()},
        },
        "expected_overlap": expected,
        "overlap": overlap["intersection"],
        "overlap_per_key": overlap["per_key"],
        "lead_scoring": {
            "auc": {k: v["auc"] for k, v in metrics["models"].items()},
            "aligned_rows": metrics["aligned_rows"],
            "new_leads_scored": metrics["new_leads_scored"],
            "new_leads_matched": metrics["new_leads_matched"],
        },
        "lookalike": {
            "seed_label": SEED_LABEL,
            "aligned_rows": lookalike["aligned_rows"],
            "holdout_auc": lookalike["holdout"]["auc"],
            "audience_handle": lookalike["audience"]["handle"],
            "audience_size": lookalike["audience"]["size"],
            "expected_lift": lookalike["audience"]["expected_lift"],
            "top_decile_lift": (lookalike["holdout"].get("lift_by_decile") or [None])[0],
        },
        "enriched_rows": enrichment["intersection"],
        "matched_partner_rows": matching["intersection"],
        "lost_leads": aggregate["brand_rows"],
        "lost_leads_known": aggregate["intersection"],
        "competitor_cells": aggregate["cells"],
        "invalid_keys": {"brand": overlap["left_invalid"], "partner": overlap["right_invalid"]},
        "seconds": {
            job: s.get("seconds_end_to_end", s.get("seconds")) for job, s in summaries.items()
        },
        "outputs": {job: str(out / job / "result") for job in summaries},
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    from pec.report import write_report

    write_report(out, result, manifests)
    result["report"] = str(out / "report.html")
    return result
