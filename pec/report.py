"""``report.html``: the demo's results on one self-contained page.

Everything is inline (plots as base64 PNG, styles in the head): the file can be mailed or opened
offline. Sections follow the jobs: consent exclusions per job on both nodes, overlap, lead scoring
(ROC, lift, score distributions of the new leads), lookalike (score bands, audience size, expected
lift), enrichment, aggregate (suppressed cells marked), matching, and each job's audit manifests
from both nodes with their verification. Model plots and files are read from the brand node's job
folders. Text from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["write_report"]

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d2733}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #dde3ea;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #dde3ea;padding:.3em .6em;
text-align:right}th{background:#f3f6f9}td:first-child,th:first-child{text-align:left}
.muted{color:#667}.plots img{max-width:48%;margin-right:1%}pre{background:#f6f8fa;padding:1em;
overflow-x:auto;font-size:12px}.kpi{display:inline-block;margin:.4em 1.5em .4em 0}
.kpi b{display:block;font-size:1.6em}
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return _img(buffer.getvalue())


def _img(data: bytes, alt: str = "plot") -> str:
    encoded = base64.b64encode(data).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _kpi(label: str, value: Any) -> str:
    return f'<span class="kpi"><b>{html.escape(_fmt(value))}</b>{html.escape(label)}</span>'


def _consent_section(consent: Mapping[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = consent["jobs"]
    reasons = sorted({r for c in jobs.values() for r in c["excluded"]})
    rows = [
        [job, c["purpose"], c["eligible"], *[c["excluded"].get(r, 0) for r in reasons],
         c["brand_rows"], c["rows_used"], c["partner_rows"], c["partner_rows_used"],
         "yes" if c["verified"] else "NO"]
        for job, c in jobs.items()
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(8, 3.2))
    names = list(jobs)
    bottom = [0] * len(names)
    series = [("eligible", [jobs[j]["eligible"] for j in names])]
    series += [(r, [jobs[j]["excluded"].get(r, 0) for j in names]) for r in reasons]
    for label, values in series:
        if any(values):
            ax.barh(names, values, left=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(xlabel="subjects", title="Brand consent cohort per job (recipient: the partner)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    head = next(iter(jobs.values()))["tree_head"] or {}
    header = ["job", "purpose", "eligible", *reasons, "brand rows", "brand rows used",
              "partner rows", "partner rows used", "manifests verified"]  # fmt: skip
    return (
        "<h2>Consent</h2>"
        f"<p>{_kpi('events in the brand ledger', consent['events'])}"
        f"{_kpi('events in the partner ledger', consent['partner_events'])}"
        f"{_kpi('ledgers verified', 'yes' if consent['verified'] else 'NO')}</p>"
        f"<p class='muted'>Each node cut its own input to the subjects its own ledger consents "
        f"for the job's purpose with the other company as recipient. The brand's cohorts are "
        f"bound to its signed tree head of size {_fmt(head.get('tree_size'))}, root "
        f"{html.escape(str(head.get('root_hash', ''))[:16])}…; after each job both nodes "
        "re-checked their cohorts against their ledgers (last column).</p>"
        + _table(header, rows)
        + _png(fig)
    )


def _score_plot(scores: pd.DataFrame, labels: list[str]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 3.2), squeeze=False)
    for ax, label in zip(axes[0], labels, strict=True):
        column = scores[f"score_{label}"]
        matched = scores["matched"] == 1
        ax.hist([column[matched], column[~matched]], bins=20, range=(0, 1), stacked=True,
                label=["federated (partner knows the lead)", "brand-only part"])  # fmt: skip
        ax.set(xlabel=f"score_{label}", ylabel="new leads", title=f"New leads: {label}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _lead_section(job: Path, result: Mapping[str, Any]) -> str:
    folder = job / "out"
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = [
        [label, m.get("auc"), m.get("ks"), m.get("epochs"), m.get("best_epoch")]
        for label, m in metrics["models"].items()
    ]
    plots = "".join(
        _img((folder / name).read_bytes(), name)
        for name in ("roc.png", "lift.png")
        if (folder / name).exists()
    )
    scores = pd.read_csv(job / "scores.csv")
    lead = result["lead_scoring"]
    return (
        "<h2>Lead scoring (vertical federated learning)</h2>"
        f"<p>{_kpi('rows aligned by PSI', lead['aligned_rows'])}"
        f"{_kpi('new leads scored', lead['new_leads_scored'])}"
        f"{_kpi('of which the partner knows', lead['new_leads_matched'])}</p>"
        "<p class='muted'>Logistic regression over the brand's and the partner's features; the "
        "partner's features and weights never leave the partner, labels never leave the brand, "
        f"gradients travel Paillier-encrypted and masked. Evaluated on the "
        f"{html.escape(str(metrics['evaluated_on']))} rows ({_fmt(metrics['test_rows'])}). "
        "New leads the partner does not know are scored with the brand's part of the model "
        "(the partner's part at its mean).</p>"
        + _table(["model", "AUC", "KS", "epochs", "best epoch"], rows)
        + f"<div class='plots'>{plots}</div>"
        + _score_plot(scores, list(metrics["models"]))
        + f"<p class='muted'>Scores per new lead: {html.escape(str(job))}/scores.csv, registered "
        f"on the brand node as the table <code>{html.escape(str(lead['scores_table']))}</code>.</p>"
    )


def _lookalike_section(job: Path) -> str:
    folder = job / "out"
    summary = json.loads((folder / "lookalike.json").read_text())
    audience, holdout = summary["audience"], summary["holdout"]
    rows = [
        [f"{b['low']:.2f}–{b['high']:.2f}", "suppressed" if b["count"] is None else b["count"]]
        for b in summary["distribution"]["bands"]
    ]
    plot = (
        _img((folder / "lookalike.png").read_bytes(), "lookalike")
        if (folder / "lookalike.png").exists()
        else ""
    )
    lift = holdout.get("lift_by_decile") or [None]
    return (
        "<h2>Lookalike audience</h2>"
        f"<p>{_kpi('seed people aligned', summary['aligned_rows'])}"
        f"{_kpi('audience size (stays with the partner)', audience['size'])}"
        f"{_kpi('expected lift', audience['expected_lift'])}"
        f"{_kpi('holdout AUC', holdout.get('auc'))}"
        f"{_kpi('holdout top-decile lift', lift[0])}</p>"
        f"<p class='muted'>A model on the partner's tags only, trained with the brand's "
        f"<code>{html.escape(str(summary['label']))}</code> outcome on the people both know; the "
        "partner scored its whole population. The brand sees only how many people it does not "
        "already have sit in each score band (bands under the minimum cell suppressed) and the "
        f"audience's handle <code>{html.escape(str(audience['handle']))}</code>, size and cut "
        f"score {_fmt(audience['cut_score'])}; the member list stays with the partner for "
        "activation, seed members excluded.</p>"
        + plot
        + "<details><summary>score distribution (people per band)</summary>"
        + _table(["score band", "people"], rows)
        + "</details>"
    )


def _aggregate_section(result: Mapping[str, Any]) -> str:
    import matplotlib.pyplot as plt

    cells, shares = result["competitor_cells"], result["competitor_shares"]
    # the lost leads who bought no competitor's car dwarf the others: shown only when no
    # competitor cell reached the minimum (a small run), so the plot is never empty
    rename = {"(missing) x (missing)": "no competitor car"}
    shown = {rename.get(k, k): v for k, v in cells.items() if v is not None}
    if len(shown) > 1:
        shown.pop("no competitor car", None)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.bar(list(shown), list(shown.values()),
           color=["#bbbbbb" if k == "no competitor car" else "#4c78a8" for k in shown])  # fmt: skip
    ax.set(ylabel="lost leads", title="Lost leads by competitor brand x price tier (released)")
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    fig.tight_layout()
    rows = [
        [k, "suppressed (< min cell)" if v is None else v,
         "—" if shares.get(k) is None else f"{100 * shares[k]:.1f} %"]
        for k, v in cells.items()
    ]  # fmt: skip
    return (
        "<h2>Aggregate: where lost leads went</h2>"
        f"<p>{_kpi('lost leads', result['lost_leads'])}"
        f"{_kpi('known to the partner', result['lost_leads_known'])}</p>"
        "<p class='muted'>Only counts per cell (competitor brand x price tier) and their shares of "
        "the lost leads the partner knows reach the brand; cells under the policy's minimum are "
        "suppressed. <code>(missing) x (missing)</code> are lost leads the partner knows but saw "
        "buy no competitor's car.</p>" + _table(["cell", "lost leads", "share"], rows) + _png(fig)
    )


def _audit_section(manifests: Mapping[str, Mapping[str, Any]]) -> str:
    rows, details = [], []
    for job, record in manifests.items():
        checks = record["verification"]
        verdicts = ["ok" if checks[side]["ok"] else "FAILED" for side in ("brand", "partner")]
        rows.append([job, record["manifest"]["job_id"], *verdicts])
        details.append(
            f"<details><summary>{html.escape(job)}</summary><pre>"
            f"{html.escape(json.dumps(record, indent=2))}</pre></details>"
        )
    return (
        "<h2>Audit manifests</h2>"
        "<p class='muted'>Per job and node: the spec, each side's consent cohort (signed tree "
        "head, eligible and excluded counts, subject-list digest), the partner's decision, the "
        "digests of every message exchanged and the outputs. Each node verified its own cohorts: "
        "tree-head signature, the head still in the ledger and consistent with the latest, and "
        "the cohort cut again at its time.</p>"
        + _table(["job", "job id", "brand cohorts verified", "partner cohort verified"], rows)
        + "".join(details)
    )


def write_report(
    out: Path,
    result: Mapping[str, Any],
    manifests: Mapping[str, Mapping[str, Any]],
    folders: Mapping[str, Path],
) -> Path:
    """Write ``out/report.html``; returns its path.

    From the demo's summary, the jobs' manifests (both nodes) and the brand node's job folders.
    """
    import matplotlib

    matplotlib.use("Agg")
    per_key = ", ".join(f"{k}: {_fmt(v)}" for k, v in result["overlap_per_key"].items())
    overlap = (
        "<h2>Overlap (PSI cardinality)</h2>"
        f"<p>{_kpi('brand customers the partner knows', result['overlap'])}"
        f"{_kpi('expected (plaintext check, demo only)', result['expected_overlap'])}</p>"
        f"<p class='muted'>Per key: {html.escape(per_key)}. Neither side learns which rows "
        "matched.</p>"
    )
    enrichment = (
        "<h2>Enrichment (labeled PSI)</h2>"
        f"<p>{_kpi('brand customers enriched', result['enriched_rows'])}</p>"
        "<p class='muted'>The brand receives the allowed tag columns for its matched customers "
        "only; the partner does not learn which customers were asked about.</p>"
    )
    matching = (
        "<h2>Matching (retargeting)</h2>"
        f"<p>{_kpi('partner rows matched for delivery', result['matched_partner_rows'])}</p>"
        "<p class='muted'>Only the partner (media side) learns the matched set.</p>"
    )
    timings = _table(
        ["job", "seconds"], [[job, seconds] for job, seconds in result["seconds"].items()]
    )
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>PEC demo report</title><style>{_STYLE}</style></head><body>"
        "<h1>PEC clean room: demo report</h1>"
        f"<p class='muted'>Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}: "
        f"{_fmt(result['brand_rows'])} brand leads, {_fmt(result['new_leads'])} new leads, "
        f"{_fmt(result['partner_rows'])} partner people (generated data). Every job ran between "
        f"the brand node <code>{html.escape(result['nodes']['brand']['name'])}</code> and the "
        f"partner node <code>{html.escape(result['nodes']['partner']['name'])}</code>, two "
        "separate processes with their own data, ledgers and keys, submitted through the brand "
        "node's API.</p>"
        + _consent_section(result["consent"])
        + overlap
        + _lead_section(folders["lead_scoring"], result)
        + _lookalike_section(folders["lookalike"])
        + enrichment
        + _aggregate_section(result)
        + matching
        + "<h2>Timings</h2>"
        + timings
        + _audit_section(manifests)
        + "</body></html>"
    )
    path = out / "report.html"
    partial = out / ".report.html.partial"
    partial.write_text(page, encoding="utf-8")
    partial.replace(path)
    return path
