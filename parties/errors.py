"""Errors of party nodes.

    PartyError (PecError)
    ├── NodeConfigError (ConfigurationError)  a node home or config file is missing or malformed
    └── EnvelopeError                         a cross-party message is refused
        ├── UnknownNode                       the sender is not a configured peer
        ├── NotApproved                       the message belongs to no job approved for the sender
        ├── ReplayedMessage                   a sequence number already seen (or too old)
        └── BadEnvelope (ValueError)          malformed, or the signature does not verify

Verification failures are one opaque error (``BadEnvelope``): the message never says which check
failed inside the signature, and never echoes the payload.
"""

from __future__ import annotations

from pec.errors import ConfigurationError, PecError


class PartyError(PecError):
    """Root of the party-node errors."""


class NodeConfigError(PartyError, ConfigurationError):
    """A node home or its config file is missing or malformed."""


class EnvelopeError(PartyError):
    """A cross-party message is refused."""


class UnknownNode(EnvelopeError):
    """The sender's key is not one of the node's peers."""


class NotApproved(EnvelopeError):
    """The message belongs to no job that this node approved for the sender."""


class ReplayedMessage(EnvelopeError):
    """The message repeats a sequence number already accepted."""


class BadEnvelope(EnvelopeError, ValueError):
    """The envelope is malformed or its signature does not verify."""
