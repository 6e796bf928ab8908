"""Two node homes (a brand and a partner) with datasets, consent and a policy, for tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from consent.keys import LedgerKeys
from consent.ledger import ConsentLedger
from consent.storage import SqlLedgerStore
from parties.config import Dataset, NodeConfig, NodeRole, Peer, init_node
from parties.identity import NodeIdentity

BRAND, PARTNER = "acme-auto", "autodata"
POLICY = f"""
[[grants]]
brand = "{BRAND}"
purposes = ["analytics.overlap"]
job_kinds = ["overlap"]
outputs = ["count", "per_key"]
min_cohort = 10
min_overlap = 5
"""
OVERLAP_SPEC = {
    "kind": "overlap",
    "purpose": "analytics.overlap",
    "partner": PARTNER,
    "brand_dataset": "leads",
    "partner_dataset": "tags",
    "keys": [{"brand": "phone", "partner": "mobile", "kind": "phone"}],
    "outputs": ["count"],
}


def phone(i: int) -> str:
    return f"1380000{i:04d}"


def consent_rows(subjects: list[str], recipient: str, purpose: str) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"ev-{recipient}-{purpose}-{s}",
            "subject_id": s,
            "action": "grant",
            "purpose": purpose,
            "recipient": recipient,
            "data_categories": ["identifier.phone"],
            "legal_basis": "consent",
            "notice_id": "notice",
            "notice_version": "1",
            "method": "web_form",
            "occurred_at": "2026-01-01T00:00:00+00:00",
            "jurisdiction": "CN",
        }
        for s in subjects
    ]


@dataclass
class Homes:
    brand: Path
    partner: Path


def make_homes(
    root: Path,
    *,
    brand_port: int = 8700,
    partner_port: int = 8701,
    superlink: str = "127.0.0.1:9092",
    brand_db: str = "",
) -> Homes:
    """Brand: 40 leads, 30 consented for the partner. Partner: 60 people, 50 consented.

    Phones 0..39 on the brand, 20..79 on the partner: 20 shared, of which subjects 20..29 are
    consented on both sides (brand consents 0..29, partner 20..69).
    """
    homes = Homes(root / "brand", root / "partner")
    init_node(homes.brand, BRAND, NodeRole.BRAND, api_port=brand_port)
    init_node(homes.partner, PARTNER, NodeRole.PARTNER, api_port=partner_port)
    ids = {h: NodeIdentity.load(h) for h in (homes.brand, homes.partner)}
    brand_cfg, partner_cfg = NodeConfig.load(homes.brand), NodeConfig.load(homes.partner)
    brand_cfg.add_peer(Peer(name=PARTNER, role=NodeRole.PARTNER,
                            public_key=ids[homes.partner].public_text,
                            address=f"http://127.0.0.1:{partner_port}"))  # fmt: skip
    partner_cfg.add_peer(Peer(name=BRAND, role=NodeRole.BRAND,
                              public_key=ids[homes.brand].public_text,
                              address=f"http://127.0.0.1:{brand_port}"))  # fmt: skip
    leads = pd.DataFrame(
        {"subject_id": [f"b{i}" for i in range(40)], "phone": [phone(i) for i in range(40)]}
    )
    people = range(20, 80)
    tags = pd.DataFrame(
        {"subject_id": [f"p{i}" for i in people], "mobile": [phone(i) for i in people]}
    )
    leads.to_csv(homes.brand / "leads.csv", index=False)
    tags.to_csv(homes.partner / "tags.csv", index=False)
    brand_cfg.flower.superlink = partner_cfg.flower.superlink = superlink
    brand_cfg.database.url = brand_db
    brand_cfg.datasets["leads"] = Dataset(path=str(homes.brand / "leads.csv"))
    partner_cfg.datasets["tags"] = Dataset(path=str(homes.partner / "tags.csv"))
    brand_cfg.save(homes.brand)
    partner_cfg.save(homes.partner)
    (homes.partner / "policy.toml").write_text(POLICY)
    with open_ledger(homes.brand, brand_db or None) as ledger:
        ledger.record(consent_rows([f"b{i}" for i in range(30)], PARTNER, "analytics.overlap"))
    with open_ledger(homes.partner) as ledger:
        ledger.record(consent_rows([f"p{i}" for i in range(20, 70)], BRAND, "analytics.overlap"))
    return homes


class open_ledger:  # noqa: N801 - used as a context manager like open()
    def __init__(self, home: Path, url: str | None = None) -> None:
        self.ledger = ConsentLedger(
            SqlLedgerStore.open(url or f"sqlite:///{home / 'consent.sqlite3'}"),
            LedgerKeys.load_or_create(home),
        )

    def __enter__(self) -> ConsentLedger:
        return self.ledger

    def __exit__(self, *exc: object) -> None:
        self.ledger.close()
