"""Errors of the PSI engine.

    PsiError (PecError)
    ├── InvalidKeyKind (ValueError)        unknown key kind in a key spec
    ├── PsiInputError (InputError)         unusable input table: file, column, row
    ├── ProtocolError                      a peer message is unacceptable
    │   ├── MalformedMessage (ValueError)  bytes that do not decode, wrong lengths
    │   ├── UnexpectedMessage              out of order, repeated (replayed), wrong run or sender
    │   ├── HandshakeMismatch              the peers disagree on rules, mode, keys or version
    │   └── InvalidPeerPoint               a point off the curve, non-canonical or of small order
    └── PsiAborted                         the run stopped (peer failure, timeout)

Messages name stages, positions, files, rows and columns; never identifiers, keys or salts.
"""

from __future__ import annotations

from pec.errors import InputError, PecError


class PsiError(PecError):
    """Root of the PSI errors."""


class InvalidKeyKind(PsiError, ValueError):
    """A key kind other than phone, email or raw."""


class PsiInputError(PsiError, InputError):
    """An input table cannot be used (missing file or column, unreadable, empty)."""


class ProtocolError(PsiError):
    """A message from the peer is unacceptable; the run must stop."""


class MalformedMessage(ProtocolError, ValueError):
    """Bytes that are not a well-formed PSI message."""


class UnexpectedMessage(ProtocolError):
    """A message out of order, repeated, or for another run or sender."""


class HandshakeMismatch(ProtocolError):
    """The parties disagree on the protocol version, rule set, reveal mode or key kinds."""


class InvalidPeerPoint(ProtocolError, ValueError):
    """The peer sent a value that is not a valid curve point."""


class PsiAborted(PsiError):
    """The run stopped before completion (peer failure, broken link or timeout)."""
