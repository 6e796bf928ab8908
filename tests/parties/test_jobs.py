from pathlib import Path

import pytest

from parties.errors import NodeConfigError
from parties.jobs import (
    BrandGrant,
    JobKind,
    JobSpec,
    PartnerPolicy,
    evaluate,
    overlap_allowed,
)
from psi.protocol import Reveal

pytestmark = pytest.mark.unit

SPEC_TOML = """
kind = "enrichment"
purpose = "marketing.enrichment"
partner = "autodata"
brand_dataset = "leads"
partner_dataset = "tags"
outputs = ["tags:income_level"]

[[keys]]
brand = "phone"
partner = "mobile"
kind = "phone"
"""

POLICY = PartnerPolicy(
    grants=[
        BrandGrant(
            brand="acme",
            purposes=["marketing.enrichment", "analytics.aggregate"],
            job_kinds=[JobKind.ENRICHMENT, JobKind.OVERLAP],
            outputs=["tags:income_level", "count", "per_key"],
            min_cohort=100,
            min_overlap=50,
        )
    ]
)


def spec(tmp_path: Path, text: str = SPEC_TOML) -> JobSpec:
    path = tmp_path / "job.toml"
    path.write_text(text)
    return JobSpec.load(path)


def test_spec_loads_and_maps_to_a_psi_mode(tmp_path: Path) -> None:
    job = spec(tmp_path)
    assert job.kind.psi_reveal is Reveal.LEFT
    assert JobKind.OVERLAP.psi_reveal is Reveal.COUNT
    assert JobKind.MATCHING.psi_reveal is Reveal.RIGHT


def test_spec_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="field purpose"):
        spec(tmp_path, SPEC_TOML.replace('"marketing.enrichment"', '"Marketing!"'))
    with pytest.raises(NodeConfigError, match="does not fit a enrichment job"):
        spec(tmp_path, SPEC_TOML.replace('"tags:income_level"', '"scores"'))
    with pytest.raises(NodeConfigError, match=r"field keys\.0\.kind"):
        spec(tmp_path, SPEC_TOML.replace('kind = "phone"', 'kind = "fax"'))
    with pytest.raises(NodeConfigError, match="not found"):
        JobSpec.load(tmp_path / "missing.toml")


def test_policy_approves_a_granted_job(tmp_path: Path) -> None:
    decision = evaluate(POLICY, "acme", spec(tmp_path), brand_cohort=500, partner_cohort=900)
    assert decision.approved and decision.reasons == []


def test_policy_lists_every_reason_to_refuse(tmp_path: Path) -> None:
    job = spec(
        tmp_path,
        SPEC_TOML.replace('"marketing.enrichment"', '"marketing.lookalike"').replace(
            '"tags:income_level"', '"tags:income_level", "tags:claims"'
        ),
    )
    decision = evaluate(POLICY, "acme", job, brand_cohort=10, partner_cohort=900)
    assert not decision.approved
    assert len(decision.reasons) == 3
    assert any("purpose" in r for r in decision.reasons)
    assert any("tags:claims" in r for r in decision.reasons)
    assert any("brand cohort 10" in r for r in decision.reasons)
    unknown = evaluate(POLICY, "other", job, brand_cohort=500, partner_cohort=900)
    assert unknown.reasons == ["no grant for brand 'other'"]


def test_overlap_threshold() -> None:
    assert overlap_allowed(POLICY, "acme", 50).approved
    assert not overlap_allowed(POLICY, "acme", 49).approved


def test_a_lead_scoring_run_config_follows_the_spec_and_the_stream_setting(tmp_path: Path) -> None:
    from parties.node_runner import _vfl_config

    spec = JobSpec.model_validate(
        {"kind": "lead_scoring", "purpose": "marketing.lead_scoring", "partner": "p",
         "brand_dataset": "hist", "partner_dataset": "people", "score_dataset": "new",
         "keys": [{"brand": "phone", "partner": "mobile", "kind": "phone"}],
         "labels": ["speed", "revenue"], "features": ["visits"], "outputs": ["metrics"]}
    )  # fmt: skip
    (tmp_path / "score_input.csv").write_text("lead_id,phone,visits\n")
    config = _vfl_config("j1", spec, tmp_path, 120.0, "10.0.0.5")
    assert config["labels"] == "speed;revenue" and config["features"] == "visits"
    assert config["id-column"] == "phone" and config["id-kind"] == "phone"
    assert config["test-table"] == str(tmp_path / "score_input.csv")
    assert (config["transport"], config["stream-host"]) == ("stream", "10.0.0.5")
    assert _vfl_config("j1", spec, tmp_path, 120.0, "")["transport"] == "flower"
    with pytest.raises(ValueError, match="key_bits"):
        JobSpec.model_validate(spec.model_dump() | {"key_bits": 1024})
