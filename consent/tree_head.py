"""Signed tree heads: the ledger's size and root at a moment, signed with the node key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consent.keys import LedgerKeys, key_id, verify_signature
from consent.model import canonical_json, format_time, parse_time

_DOMAIN = b"pec-consent-sth-v1\n"


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """``tree_size`` leaves with Merkle root ``root_hash``, signed at ``timestamp``."""

    tree_size: int
    root_hash: bytes
    timestamp: datetime
    key_id: str
    signature: bytes

    @staticmethod
    def signing_input(tree_size: int, root_hash: bytes, timestamp: datetime, kid: str) -> bytes:
        """Return the exact bytes that are signed (domain-separated canonical JSON)."""
        body = {
            "tree_size": tree_size,
            "root_hash": root_hash.hex(),
            "timestamp": format_time(timestamp),
            "key_id": kid,
        }
        return _DOMAIN + canonical_json(body)

    @classmethod
    def sign(
        cls, tree_size: int, root_hash: bytes, timestamp: datetime, keys: LedgerKeys
    ) -> SignedTreeHead:
        """Sign a tree head with the node key."""
        kid = keys.key_id
        sig = keys.sign(cls.signing_input(tree_size, root_hash, timestamp, kid))
        return cls(tree_size, root_hash, timestamp, kid, sig)

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        """Return whether the signature is valid and made by ``public_key``."""
        if key_id(public_key) != self.key_id:
            return False
        message = self.signing_input(self.tree_size, self.root_hash, self.timestamp, self.key_id)
        return verify_signature(public_key, self.signature, message)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": format_time(self.timestamp),
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignedTreeHead:
        """Read the JSON form.

        Raises:
            ValueError: malformed fields.
        """
        return cls(
            tree_size=int(data["tree_size"]),
            root_hash=bytes.fromhex(data["root_hash"]),
            timestamp=parse_time(data["timestamp"], "timestamp"),
            key_id=str(data["key_id"]),
            signature=bytes.fromhex(data["signature"]),
        )
