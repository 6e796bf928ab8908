"""Errors of party nodes.

    PartyError (PecError)
    ├── NodeConfigError (ConfigurationError)  a node home or config file is missing or malformed
    ├── JobError                              a job request or transition is refused
    │   ├── UnknownJob (LookupError)          no job with that id on this node
    │   └── JobStateError                     the job is not in a state that allows this
    ├── PeerUnreachable                       a peer's control plane did not answer in time
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


class JobError(PartyError):
    """A job request or state transition is refused."""


class UnknownJob(JobError, LookupError):
    """No job with that id on this node."""


class JobStateError(JobError):
    """The job is not in a state that allows this (e.g. it already ended)."""


class PeerUnreachable(PartyError):
    """A peer's control plane did not answer (or not in time)."""


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
