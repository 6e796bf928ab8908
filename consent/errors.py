"""Errors of the consent ledger.

Messages name files, rows, fields, entry positions and tree sizes; they never carry a raw
subject identifier, a key or a secret.

    PecError
    └── ConsentError
        ├── ConsentInputError (InputError, ValueError)   a bad event: file, row, field
        ├── DuplicateEventError (ConsentInputError)      an event_id reused with other content
        ├── UnknownSubjectError (LookupError)            no event for that subject
        ├── LedgerIntegrityError                         verification failed; names the bad entry
        ├── ProofError (ValueError)                      a proof cannot be built for these sizes
        ├── LedgerBusyError                              another writer held the ledger too long
        └── LedgerKeyError                               a node key is missing, unreadable, unsafe
"""

from __future__ import annotations

from pec.errors import InputError, PecError


class ConsentError(PecError):
    """Root of all consent-ledger errors."""


class ConsentInputError(ConsentError, InputError):
    """An event (or a file of events) is malformed.

    Attributes name where: ``source`` (file name or ``"request"``), ``row`` (1-based data row,
    header excluded) and ``field``. The offending value is never echoed.
    """

    def __init__(
        self,
        reason: str,
        *,
        field: str | None = None,
        row: int | None = None,
        source: str | None = None,
    ) -> None:
        self.reason = reason
        self.field = field
        self.row = row
        self.source = source
        where = []
        if source is not None:
            where.append(source)
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)

    def located(self, *, row: int | None = None, source: str | None = None) -> ConsentInputError:
        """Return a copy of this error that also names the row and the source file."""
        return type(self)(
            self.reason,
            field=self.field,
            row=row if row is not None else self.row,
            source=source if source is not None else self.source,
        )


class DuplicateEventError(ConsentInputError):
    """An ``event_id`` already in the ledger (or earlier in the file) arrives with other content."""


class UnknownSubjectError(ConsentError, LookupError):
    """The ledger holds no event for the subject asked about."""


class LedgerIntegrityError(ConsentError):
    """The ledger does not verify.

    ``entry`` is the 0-based position of the first bad entry (``None`` when the failure is not
    tied to one entry, for example a bad signature on a tree head); ``reason`` says what failed.
    """

    def __init__(self, reason: str, *, entry: int | None = None) -> None:
        self.reason = reason
        self.entry = entry
        where = f"entry {entry}: " if entry is not None else ""
        super().__init__(f"{where}{reason}")


class ProofError(ConsentError, ValueError):
    """A proof was asked for sizes or indices the ledger cannot answer."""


class LedgerBusyError(ConsentError):
    """Another process kept the ledger locked past the wait limit; retry later."""


class LedgerKeyError(ConsentError):
    """The node's ledger key or subject key is missing, unreadable or unsafe."""
