"""``pec consent``: import, verify and query the consent ledger."""

from __future__ import annotations

import typer

app = typer.Typer(help="Consent & preference ledger.", no_args_is_help=True)
