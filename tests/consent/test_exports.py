import pytest

import consent

pytestmark = pytest.mark.unit


def test_consent_exports() -> None:
    assert sorted(consent.__all__) == [
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
    for name in consent.__all__:
        assert getattr(consent, name) is not None
