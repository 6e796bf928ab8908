"""Errors of the vertical federated learning protocol.

Errors that cross nodes travel as data (a code and a reason), never as pickled exceptions; these
classes are what each role raises locally. Messages name stages, sequence numbers and sizes, never
feature values, labels, weights or keys.

    PecError
    └── FederatedError
        ├── ProtocolError (ValueError)   out-of-order, repeated or malformed message
        ├── WireFormatError (ValueError) bytes that do not decode to a message
        └── RoleFinishedError            a finished (single-use) role was used again
"""

from __future__ import annotations

from pec.errors import PecError


class FederatedError(PecError):
    """Root of the federated package's errors."""


class ProtocolError(FederatedError, ValueError):
    """A message arrived in the wrong stage, twice, for another job, or with the wrong shape."""


class WireFormatError(FederatedError, ValueError):
    """Bytes that do not decode to a protocol message."""


class RoleFinishedError(FederatedError):
    """The role has finished its job; a role object serves one job only."""
