"""``pec consent``: import, verify and query the consent ledger.

Every command takes ``--db URL`` (a SQLAlchemy URL); the default is the SQLite file
``consent.sqlite3`` in the node home (``PEC_HOME``, default ``./.pec``). Raw subject identifiers
given on the command line are keyed at once and never printed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from consent.errors import ConsentInputError
from consent.ledger import ConsentLedger
from consent.model import Channel, parse_time
from pec.errors import PecError
from pec.settings import NodeSettings

# the group's summary (its help) is in pec.cli.GROUPS, so that `pec --help` need not import it
app = typer.Typer(no_args_is_help=True)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL of the ledger (default: SQLite in PEC_HOME)."),
]

EXIT_INVALID = 2
EXIT_TAMPERED = 1


@contextmanager
def _open(db: str | None) -> Iterator[ConsentLedger]:
    home = NodeSettings().home
    try:
        ledger = ConsentLedger.open(home, db)
    except PecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    try:
        yield ledger
    except PecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    finally:
        ledger.close()


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV or JSONL file of consent events.")],
    db: DbOption = None,
) -> None:
    """Import events atomically: a bad row rejects the file; importing it again changes nothing."""
    with _open(db) as ledger:
        result = ledger.import_file(file)
        head = result.tree_head or ledger.tree_head()
        typer.echo(
            f"imported {result.appended} events, skipped {result.skipped} already recorded; "
            f"ledger size {head.tree_size if head else 0}"
            + (f", root {head.root_hash.hex()}" if head else "")
        )


@app.command()
def verify(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    public_key: Annotated[
        Path | None,
        typer.Option(help="Verify tree heads against this Ed25519 public key (PEM)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes checking chunks of 65,536 entries (default: one per CPU, "
            "at most 4).",
        ),
    ] = None,
) -> None:
    """Recompute the whole ledger; exit 0 when intact, 1 naming the first bad entry when not."""
    from consent.keys import load_public_key

    with _open(db) as ledger:
        pk = load_public_key(public_key.read_bytes()) if public_key else None
        report = ledger.verify(pk, workers=workers or min(os.cpu_count() or 1, 4))
    if as_json:
        _print_json(report.to_dict())
    elif report.ok:
        head = report.tree_head
        typer.echo(
            f"ledger intact: {report.entries_checked} entries, "
            f"{report.tree_heads_checked} signed tree heads"
            + (f", root {head.root_hash.hex()}" if head else "")
        )
    else:
        typer.echo(f"LEDGER TAMPERED: {report.error}", err=True)
    if not report.ok:
        raise typer.Exit(EXIT_TAMPERED)


@app.command()
def cohort(
    purpose: Annotated[str, typer.Option(help="Purpose, e.g. marketing.lead_scoring.")],
    out: Annotated[Path, typer.Option(help="CSV to write; the receipt goes beside it.")],
    recipient: Annotated[
        str | None, typer.Option(help="Third party that receives the data (separate consent).")
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="ISO 8601 time with offset (default: now).")
    ] = None,
    categories: Annotated[
        str | None, typer.Option(help="Data categories needed, ';'-separated.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Write the eligible subjects (CSV, header ``subject_key``) and a signed JSON receipt."""
    when: datetime | None = None
    try:
        when = parse_time(at, "at") if at else None
    except ConsentInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    cats = [c.strip() for c in (categories or "").split(";") if c.strip()]
    receipt_path = out.with_name(out.stem + ".receipt.json")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with _open(db) as ledger:
        digest = hashlib.sha256()
        try:
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["subject_key"])

                def sink(key: str) -> None:
                    writer.writerow([key])

                snap = ledger.cohort(purpose, recipient or "", cats, when, sink)
            digest.update(tmp.read_bytes())
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        body = snap.body()
        body["subjects_file"] = out.name
        body["subjects_file_sha256"] = digest.hexdigest()
        from consent.ledger import sign_document

        receipt = sign_document(body, ledger.keys)
    receipt_path.write_text(json.dumps(receipt, indent=2, ensure_ascii=False) + "\n")
    excluded = ", ".join(f"{k} {v}" for k, v in snap.excluded.items() if v)
    typer.echo(
        f"{snap.eligible} eligible subjects -> {out}; excluded: {excluded or 'none'}; "
        f"receipt -> {receipt_path}"
    )


@app.command()
def history(
    subject: Annotated[str, typer.Argument(help="The subject's identifier (keyed, not stored).")],
    db: DbOption = None,
) -> None:
    """Print a subject's events in ledger order, as JSON."""
    with _open(db) as ledger:
        _print_json(ledger.history(subject))


@app.command()
def receipt(
    subject: Annotated[str, typer.Argument(help="The subject's identifier (keyed, not stored).")],
    db: DbOption = None,
) -> None:
    """Print a subject's signed consent receipt (ISO/IEC TS 27560 field names)."""
    with _open(db) as ledger:
        _print_json(ledger.receipt(subject))


@app.command("tree-head")
def tree_head(db: DbOption = None) -> None:
    """Print the latest signed tree head and the node's public key."""
    with _open(db) as ledger:
        head = ledger.tree_head()
        _print_json(
            {
                "tree_head": head.to_dict() if head else None,
                "public_key_pem": ledger.keys.public_pem().decode("ascii"),
            }
        )


@app.command()
def check(
    subject: Annotated[str, typer.Argument(help="The subject's identifier.")],
    purpose: Annotated[str, typer.Option(help="Purpose to check.")],
    recipient: Annotated[str | None, typer.Option(help="Third-party recipient.")] = None,
    categories: Annotated[str | None, typer.Option(help="';'-separated categories.")] = None,
    db: DbOption = None,
) -> None:
    """Say whether the subject's data may be used now; exit 0 if yes, 3 if no."""
    cats = [c.strip() for c in (categories or "").split(";") if c.strip()]
    with _open(db) as ledger:
        d = ledger.check(subject, purpose, recipient or "", cats)
    _print_json({"allowed": d.allowed, "reasons": list(d.reasons), "state": d.state})
    if not d.allowed:
        raise typer.Exit(3)


@app.command("contact-check")
def contact_check(
    subject: Annotated[str, typer.Argument(help="The subject's identifier.")],
    channel: Annotated[Channel, typer.Option(help="Contact channel.")],
    topic: Annotated[str, typer.Option(help="Topic of the message.")],
    at: Annotated[str | None, typer.Option(help="ISO 8601 time (default: now).")] = None,
    db: DbOption = None,
) -> None:
    """Say whether the subject may be contacted; exit 0 if yes, 3 if no."""
    with _open(db) as ledger:
        when = parse_time(at, "at") if at else None
        d = ledger.check_contact(subject, channel, topic, when)
    _print_json({"allowed": d.allowed, "reasons": list(d.reasons)})
    if not d.allowed:
        raise typer.Exit(3)


@app.command()
def rebuild(db: DbOption = None) -> None:
    """Rebuild the current-state projections from the log."""
    with _open(db) as ledger:
        n = ledger.rebuild_projections()
    typer.echo(f"replayed {n} entries")


__all__ = ["app"]
