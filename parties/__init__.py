"""Party nodes: identity and keys, peers, datasets, signed message envelopes.

Built so far: a node home (``node.toml`` + Ed25519 identity), peers and datasets by name, and
signed envelopes that refuse unknown nodes, unapproved jobs and replays. The control plane, the
job handshake and the Flower wiring come with the party-node issue.
"""

from __future__ import annotations

from parties.config import Dataset, NodeConfig, NodeRole, Peer, init_node
from parties.envelope import EnvelopeGuard, Sealed, open_envelope, seal
from parties.errors import (
    BadEnvelope,
    EnvelopeError,
    NodeConfigError,
    NotApproved,
    PartyError,
    ReplayedMessage,
    UnknownNode,
)
from parties.identity import NodeIdentity

__all__ = [
    "BadEnvelope",
    "Dataset",
    "EnvelopeError",
    "EnvelopeGuard",
    "NodeConfig",
    "NodeConfigError",
    "NodeIdentity",
    "NodeRole",
    "NotApproved",
    "PartyError",
    "Peer",
    "ReplayedMessage",
    "Sealed",
    "UnknownNode",
    "init_node",
    "open_envelope",
    "seal",
]
