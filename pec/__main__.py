"""``python -m pec`` runs the CLI."""

from pec.cli import main

main()
