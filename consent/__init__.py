"""Consent and preference ledger: the gate for every job and the compliance officer's evidence."""
