"""The ``pec`` command line: everything a user does, one sub-command group per subsystem."""

from __future__ import annotations

import typer

from consent.cli import app as consent_app
from pec import __version__
from pec.psi_cli import app as psi_app

app = typer.Typer(
    name="pec",
    help="PEC: a privacy-preserving clean room for brands and their data partners.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(psi_app, name="psi")
app.add_typer(consent_app, name="consent")


@app.command()
def version() -> None:
    """Print the PEC version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()
