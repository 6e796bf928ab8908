"""The node's ledger keys.

An Ed25519 key signs tree heads and receipts; a secret keys the subject hashes. Both live in
the node home (``$PEC_HOME/keys``), in files readable by the owner only.
Nothing here ever logs, prints or puts a key in an exception message.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consent.errors import LedgerKeyError
from consent.model import SubjectKeyer

SIGNING_KEY_FILE = "consent_ed25519.pem"
SUBJECT_KEY_FILE = "consent_subject.key"
PUBLIC_KEY_FILE = "consent_ed25519.pub.pem"


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the fingerprint of a public key: SHA-256 of its 32 raw bytes, in hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def verify_signature(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Return whether ``signature`` is a valid Ed25519 signature of ``message``."""
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """Read an Ed25519 public key in PEM (SubjectPublicKeyInfo).

    Raises:
        LedgerKeyError: not an Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise LedgerKeyError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LedgerKeyError("not an Ed25519 public key")
    return key


@dataclass(frozen=True, repr=False)
class LedgerKeys:
    """The keys one node uses for its ledger."""

    signing_key: Ed25519PrivateKey
    subject_secret: bytes

    def __repr__(self) -> str:
        return f"LedgerKeys(key_id={self.key_id[:16]}…)"

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half of the signing key."""
        return self.signing_key.public_key()

    @property
    def key_id(self) -> str:
        """Fingerprint of the public key."""
        return key_id(self.public_key)

    @property
    def keyer(self) -> SubjectKeyer:
        """The subject keyer built on the node's subject secret."""
        return SubjectKeyer(self.subject_secret)

    def public_pem(self) -> bytes:
        """Return the public key in PEM, for auditors."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, message: bytes) -> bytes:
        """Sign with the node key."""
        return self.signing_key.sign(message)

    @classmethod
    def generate(cls) -> LedgerKeys:
        """Fresh keys in memory (tests, throwaway ledgers)."""
        return cls(Ed25519PrivateKey.generate(), secrets.token_bytes(32))

    @classmethod
    def load_or_create(cls, home: Path) -> LedgerKeys:
        """Load the node's keys from ``home/keys``, creating them on first use.

        Creation is race-free between processes (exclusive create, then re-read).

        Raises:
            LedgerKeyError: a key file is unreadable, malformed or readable by others.
        """
        keys_dir = home / "keys"
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        signing_path = keys_dir / SIGNING_KEY_FILE
        subject_path = keys_dir / SUBJECT_KEY_FILE
        if not signing_path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _create_secret_file(signing_path, pem)
        if not subject_path.exists():
            _create_secret_file(subject_path, secrets.token_bytes(32))
        signing_pem = _read_secret_file(signing_path)
        try:
            key = serialization.load_pem_private_key(signing_pem, password=None)
        except (ValueError, TypeError):
            raise LedgerKeyError(f"{signing_path.name} is not a PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise LedgerKeyError(f"{signing_path.name} is not an Ed25519 key")
        subject_secret = _read_secret_file(subject_path)
        if len(subject_secret) < 32:
            raise LedgerKeyError(f"{subject_path.name} is shorter than 32 bytes")
        keys = cls(key, subject_secret)
        public_path = keys_dir / PUBLIC_KEY_FILE
        if not public_path.exists():
            public_path.write_bytes(keys.public_pem())
        return keys


def _create_secret_file(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process won the race; its key is the node's key
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _read_secret_file(path: Path) -> bytes:
    try:
        st = path.stat()
    except OSError:
        raise LedgerKeyError(f"{path.name} is missing") from None
    if st.st_mode & 0o077:
        raise LedgerKeyError(f"{path.name} is readable by group or others; chmod 600 it")
    # A file created by a racing process may still be empty for an instant.
    for _ in range(50):
        data = path.read_bytes()
        if data:
            return data
        import time

        time.sleep(0.01)
    raise LedgerKeyError(f"{path.name} is empty")
