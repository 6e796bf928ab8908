"""Consent and preference ledger: the gate for every job and the compliance officer's evidence.

Use :class:`ConsentLedger` (open it with ``ConsentLedger.open(home, url)``); the Merkle functions
live in :mod:`consent.merkle`. This package never logs, stores or echoes a raw subject identifier.
"""

from consent.errors import (
    ConsentError,
    ConsentInputError,
    DuplicateEventError,
    LedgerIntegrityError,
    LedgerKeyError,
    ProofError,
    UnknownSubjectError,
)
from consent.keys import LedgerKeys
from consent.ledger import (
    CohortSnapshot,
    ConsentLedger,
    Decision,
    Exclusion,
    VerificationReport,
    verify_document,
)
from consent.model import Action, Channel, ConsentEvent, ConsentState, SubjectKeyer
from consent.tree_head import SignedTreeHead

__all__ = [
    "Action",
    "Channel",
    "CohortSnapshot",
    "ConsentError",
    "ConsentEvent",
    "ConsentInputError",
    "ConsentLedger",
    "ConsentState",
    "Decision",
    "DuplicateEventError",
    "Exclusion",
    "LedgerIntegrityError",
    "LedgerKeyError",
    "LedgerKeys",
    "ProofError",
    "SignedTreeHead",
    "SubjectKeyer",
    "UnknownSubjectError",
    "VerificationReport",
    "verify_document",
]
