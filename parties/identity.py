"""A node's identity: an Ed25519 key pair kept in the node home.

The private key lives in ``<home>/keys/node_ed25519.pem`` (PKCS#8, owner-only permissions) and is
never logged, printed or sent. Peers know a node by its public key; its fingerprint (SHA-256 of
the 32 raw public-key bytes, hex) names it in configs, manifests and logs.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from parties.errors import BadEnvelope, NodeConfigError

__all__ = ["NodeIdentity", "fingerprint", "public_key_from_text", "public_key_to_text"]

KEY_FILE = "node_ed25519.pem"


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, hex: the node's public name."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_to_text(public_key: Ed25519PublicKey) -> str:
    """The raw public key in URL-safe base64 (what peers exchange and put in configs)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Parse a public key written by :func:`public_key_to_text`.

    Raises:
        NodeConfigError: if the text is not a 32-byte key in base64.
    """
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
        if len(raw) != 32:
            raise ValueError("length")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError):
        raise NodeConfigError("a peer public key must be 32 bytes in URL-safe base64") from None


@dataclass(frozen=True, repr=False)
class NodeIdentity:
    """The node's signing key. ``repr`` shows the fingerprint only."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> NodeIdentity:
        """A fresh identity (not saved)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, home: Path) -> NodeIdentity:
        """Load the identity of the node at ``home``.

        Raises:
            NodeConfigError: the key file is missing or unreadable.
        """
        path = home / "keys" / KEY_FILE
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise NodeConfigError(f"no node key at {path}: run `pec node init` first") from None
        except ValueError:
            raise NodeConfigError(f"node key {path} is not a PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise NodeConfigError(f"node key {path} is not an Ed25519 key")
        return cls(key)

    def save(self, home: Path) -> Path:
        """Write the key to ``home/keys`` with owner-only permissions (refuses to overwrite).

        Raises:
            NodeConfigError: a key already exists there.
        """
        keys = home / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        os.chmod(keys, 0o700)
        path = keys / KEY_FILE
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise NodeConfigError(f"a node key already exists at {path}") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return path

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half, for peers."""
        return self.private_key.public_key()

    @property
    def fingerprint(self) -> str:
        """The node's public name."""
        return fingerprint(self.public_key)

    @property
    def public_text(self) -> str:
        """The public key as peers write it in their configs."""
        return public_key_to_text(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature of ``message``."""
        return self.private_key.sign(message)

    def __repr__(self) -> str:
        return f"NodeIdentity(fingerprint={self.fingerprint[:16]})"


def verify(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
    """Check a signature.

    Raises:
        BadEnvelope: the signature does not verify (one opaque error).
    """
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        raise BadEnvelope("signature does not verify") from None
