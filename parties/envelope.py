"""Signed envelopes for every message that crosses between two nodes.

An envelope binds a payload to a job, a sender, a recipient and a sequence number, and the
sender signs all of it (the payload through its SHA-256). The receiving node accepts it only if
the sender is a configured peer, the job is one it approved for that sender, the sequence number
is new, and the signature verifies. Pure functions and a small in-memory guard: the node persists
the guard's state with its jobs.

Layout: ``"PECENV1" | header length (4 bytes) | header (canonical JSON) | signature (64) |
payload``. Nothing in a refusal echoes the payload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from parties.errors import BadEnvelope, NotApproved, ReplayedMessage, UnknownNode
from parties.identity import NodeIdentity, fingerprint, verify

__all__ = ["EnvelopeGuard", "Sealed", "open_envelope", "seal"]

_MAGIC = b"PECENV1"
_LEN = struct.Struct(">I")
_SIG = 64


@dataclass(frozen=True)
class Sealed:
    """An opened envelope: who sent what, for which job."""

    job_id: str
    sender: str
    recipient: str
    seq: int
    kind: str
    sent_at: str
    payload: bytes


def _canonical(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def seal(
    identity: NodeIdentity,
    *,
    recipient: str,
    job_id: str,
    seq: int,
    kind: str,
    payload: bytes,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> bytes:
    """Sign and wrap ``payload`` for ``recipient`` (a peer fingerprint)."""
    header = {
        "v": 1,
        "job_id": job_id,
        "sender": identity.fingerprint,
        "recipient": recipient,
        "seq": seq,
        "kind": kind,
        "sent_at": now().isoformat(),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    head = _canonical(header)
    return _MAGIC + _LEN.pack(len(head)) + head + identity.sign(_MAGIC + head) + payload


def open_envelope(data: bytes, public_key: Ed25519PublicKey) -> Sealed:
    """Verify an envelope against the sender's public key.

    Raises:
        BadEnvelope: malformed, a different signer, or a signature or digest that does not match.
    """
    header = _header(data)
    head_len = _LEN.unpack_from(data, len(_MAGIC))[0]
    start = len(_MAGIC) + _LEN.size
    head = data[start : start + head_len]
    signature = data[start + head_len : start + head_len + _SIG]
    payload = data[start + head_len + _SIG :]
    if header["sender"] != fingerprint(public_key):
        raise BadEnvelope("signature does not verify")
    verify(public_key, signature, _MAGIC + head)
    digest = hashlib.sha256(payload).hexdigest()
    if not hmac.compare_digest(digest, header["sha256"]):
        raise BadEnvelope("payload does not match its signed digest")
    return Sealed(
        job_id=header["job_id"],
        sender=header["sender"],
        recipient=header["recipient"],
        seq=header["seq"],
        kind=header["kind"],
        sent_at=header["sent_at"],
        payload=payload,
    )


def _header(data: bytes) -> dict[str, Any]:
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _LEN.size:
        raise BadEnvelope("not a PEC envelope")
    (head_len,) = _LEN.unpack_from(data, len(_MAGIC))
    start = len(_MAGIC) + _LEN.size
    if start + head_len + _SIG > len(data):
        raise BadEnvelope("envelope truncated")
    try:
        header = json.loads(data[start : start + head_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadEnvelope("envelope header is not JSON") from None
    fields = {"v": int, "job_id": str, "sender": str, "recipient": str, "seq": int, "kind": str,
              "sent_at": str, "sha256": str}  # fmt: skip
    if not isinstance(header, dict) or set(header) != set(fields):
        raise BadEnvelope("envelope header has the wrong fields")
    for name, kind in fields.items():
        if not isinstance(header[name], kind) or isinstance(header[name], bool):
            raise BadEnvelope(f"envelope field {name} has the wrong type")
    if header["v"] != 1:
        raise BadEnvelope("unsupported envelope version")
    return header


@dataclass
class EnvelopeGuard:
    """What a node accepts: known peers, approved jobs, fresh sequence numbers."""

    me: str
    peers: dict[str, Ed25519PublicKey]
    approved: Callable[[str, str], bool]
    last_seq: dict[tuple[str, str], int] = field(default_factory=dict)

    def accept(self, data: bytes) -> Sealed:
        """Open an incoming envelope, or refuse it.

        Raises:
            UnknownNode: the sender is not a configured peer.
            BadEnvelope: malformed, not for this node, or the signature does not verify.
            NotApproved: the job is not approved for this sender.
            ReplayedMessage: the sequence number is not newer than the last accepted one.
        """
        header = _header(data)
        public_key = self.peers.get(header["sender"])
        if public_key is None:
            raise UnknownNode("message from a node that is not a configured peer")
        sealed = open_envelope(data, public_key)
        if sealed.recipient != self.me:
            raise BadEnvelope("envelope addressed to another node")
        if not self.approved(sealed.job_id, sealed.sender):
            raise NotApproved(f"no approved job {sealed.job_id!r} for this sender")
        key = (sealed.job_id, sealed.sender)
        if sealed.seq <= self.last_seq.get(key, -1):
            raise ReplayedMessage(f"sequence {sealed.seq} already seen for job {sealed.job_id!r}")
        self.last_seq[key] = sealed.seq
        return sealed
