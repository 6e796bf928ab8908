"""The ``pec`` command line: everything a user does, one sub-command group per subsystem."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from pec import __version__
from pec.errors import PecError
from pec.psi_cli import fail, progress_bars

if TYPE_CHECKING:
    from pec.demo import DemoNode

#: The sub-command groups: the module that defines each and what it is for. A group is imported
#: only when one of its commands runs, so that ``pec psi local`` does not pay for SQLAlchemy,
#: pydantic, httpx and Flower's modules that other groups need; ``pec --help`` lists the groups by
#: these summaries without importing any of them. Every command starts fast.
GROUPS: dict[str, tuple[str, str]] = {
    "psi": ("pec.psi_cli", "Private set intersection (ECDH-PSI on X25519)."),
    "consent": ("consent.cli", "Consent & preference ledger."),
    "node": ("pec.node_cli", "A node's home: identity, peers and datasets."),
    "job": ("pec.job_cli", "Jobs: submit, status, result, manifest, verify."),
    "vfl": ("pec.vfl_cli", "Vertical federated logistic regression (Flower + Paillier)."),
    "lookalike": (
        "pec.lookalike_cli",
        "Lookalike audiences: a model on the partner's features trained on the brand's seed "
        "labels; the audience stays with the partner.",
    ),
}


@cache
def _load_group(name: str) -> click.Command:
    module, summary = GROUPS[name]
    group = typer.main.get_group(importlib.import_module(module).app)
    group.name = name
    group.help = summary
    return group


class _LazyGroups(TyperGroup):
    """The top-level group: the groups of :data:`GROUPS` are loaded on first use."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        plain = [n for n in names if not isinstance(self.commands[n], click.Group)]
        # as typer lists them: plain commands first, then the groups
        return [*plain, *GROUPS, *(n for n in names if n not in plain)]

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True  # the listing needs only each group's summary
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in GROUPS:
            if self._listing:
                return click.Group(cmd_name, help=GROUPS[cmd_name][1])
            return _load_group(cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="pec",
    help="PEC: a privacy-preserving clean room for brands and their data partners.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_LazyGroups,
)
data_app = typer.Typer(help="Generated data for trying PEC out.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command()
def version() -> None:
    """Print the PEC version."""
    typer.echo(__version__)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the data, node homes and report go.")] = Path(
        "pec-demo"
    ),
    brand_rows: Annotated[int, typer.Option(min=1000, help="Historical brand leads.")] = 10_000,
    new_leads: Annotated[int, typer.Option(min=10, help="New leads to score.")] = 2_000,
    partner_rows: Annotated[int, typer.Option(min=2000, help="Partner people.")] = 30_000,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 7,
    key_bits: Annotated[
        int, typer.Option(min=2048, max=4096, help="Paillier key size of the model jobs.")
    ] = 2048,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Keep both nodes up after the report (until Ctrl-C) to explore their APIs; "
            "their tokens go to DIR/tokens.json (owner-only).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the six clean-room jobs between a brand node and a partner node; write report.html.

    Generates data and both sides' consent, starts the two nodes as processes, submits every job
    through the brand node's API, and stops the nodes at the end.
    """
    import signal

    from pec.demo import run_demo

    console = Console(stderr=True)

    def stop_on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # through run_demo's finally: both nodes are stopped

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        with progress_bars(console) as on_progress:
            result = run_demo(
                out,
                brand_rows=brand_rows,
                new_leads=new_leads,
                partner_rows=partner_rows,
                seed=seed,
                key_bits=key_bits,
                progress=on_progress,
                announce=lambda line: console.print(f"[bold]pec demo[/] {line}", highlight=False),
                hold=_hold(out, console) if keep_running else None,
            )
    except PecError as exc:
        raise fail(str(exc), 1) from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title="PEC demo: brand node x partner node clean room")
    table.add_column("job")
    table.add_column("what the brand learns")
    table.add_column("result", justify="right")
    consent = result["consent"]["jobs"]
    table.add_row(
        "consent (both ledgers)",
        "per job, the rows whose subject consented to the purpose for the other company",
        "; ".join(
            f"{job} {c['rows_used']:,}/{c['brand_rows']:,} brand, "
            f"{c['partner_rows_used']:,}/{c['partner_rows']:,} partner"
            for job, c in consent.items()
        ),
    )
    table.add_row(
        "overlap (PSI cardinality)",
        "how many customers the partner knows, per key",
        f"{result['overlap']:,} (expected {result['expected_overlap']:,}); "
        f"per key {result['overlap_per_key']}",
    )
    lead = result["lead_scoring"]
    table.add_row(
        "lead scoring (VFL, Flower + Paillier)",
        "a 0-1 score per new lead per model; the partner's tags stay with the partner",
        ", ".join(f"{k} AUC {v:.3f}" for k, v in lead["auc"].items() if v is not None)
        + f"; {lead['new_leads_scored']:,} new leads scored "
        f"({lead['new_leads_matched']:,} known to the partner)",
    )
    lal = result["lookalike"]
    table.add_row(
        "lookalike (partner features, brand seed)",
        "score bands of people it does not have; an audience handle, its size and expected lift",
        f"audience {lal['audience_size']:,} ({lal['audience_handle']}), expected lift "
        f"{lal['expected_lift']}; holdout AUC {lal['holdout_auc']:.3f}",
    )
    table.add_row(
        "enrichment (labeled PSI)",
        "partner tags for its matched customers only",
        f"{result['enriched_rows']:,} rows -> {result['outputs']['enrichment']}",
    )
    all_cells = result["competitor_cells"]
    withheld = sum(v is None for v in all_cells.values())
    cells = ", ".join(f"{k} {v}" for k, v in all_cells.items() if v is not None)
    cells += f"; {withheld} of {len(all_cells)} cells suppressed"
    table.add_row(
        "aggregate (PSI + Paillier)",
        "per competitor brand x price tier, how many of its lost leads bought it; small cells "
        "suppressed",
        f"{result['lost_leads_known']:,} of {result['lost_leads']:,} lost leads known: {cells}",
    )
    table.add_row(
        "matching (partner learns)",
        "nothing; the partner gets the matched set for delivery",
        f"{result['matched_partner_rows']:,} partner rows -> {result['outputs']['matching']}",
    )
    Console().print(table)
    Console().print(
        f"invalid keys set aside: {result['invalid_keys']}; manifests verified on both nodes: "
        f"{'yes' if result['manifests_verified'] else 'NO'}; summary: {out}/demo.json; "
        f"report: {result['report']}"
    )


def _hold(out: Path, console: Console) -> Callable[[DemoNode, DemoNode], None]:
    """Keep the demo's nodes up until Ctrl-C, with their API tokens in an owner-only file."""
    import os
    import time

    def hold(brand: DemoNode, partner: DemoNode) -> None:
        tokens = out / "tokens.json"
        fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({n.role: {"url": n.url, **n.tokens} for n in (brand, partner)}, handle)
        console.print(
            f"[bold]pec demo[/] nodes running: brand {brand.url}/docs, partner {partner.url}/docs;"
            f" bearer tokens in {tokens}. Ctrl-C stops them."
        )
        try:
            while brand.proc is not None and brand.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            tokens.unlink(missing_ok=True)

    return hold


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Directory for the generated tables.")],
    brand_leads: Annotated[
        int, typer.Option(min=0, help="Historical leads with outcomes.")
    ] = 20_000,
    new_leads: Annotated[int, typer.Option(min=0, help="New leads to score.")] = 5_000,
    partner_population: Annotated[
        int, typer.Option(min=1, help="People the partner knows.")
    ] = 50_000,
    overlap: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of brand people the partner knows.")
    ] = 0.6,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """Write brand leads, new leads, partner tags, both sides' consent events and truth.json."""
    from pec.datagen import DatasetSpec, generate_dataset

    try:
        spec = DatasetSpec(brand_leads, new_leads, partner_population, overlap, seed)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    console = Console(stderr=True)
    with progress_bars(console) as on_progress:
        truth = generate_dataset(
            spec, out, progress=lambda table, done, total: on_progress("data", table, done, total)
        )
    typer.echo(
        f"wrote {out}: {brand_leads:,} leads, {new_leads:,} new leads, "
        f"{partner_population:,} partner people ({truth['shared_people']:,} shared), "
        f"{truth['consent_events']:,} brand and {truth['partner_consent_events']:,} partner "
        f"consent events; base rates {truth['base_rates']}"
    )


def main() -> None:
    """Console-script entry point."""
    app()
