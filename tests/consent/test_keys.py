from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consent.errors import LedgerKeyError
from consent.keys import LedgerKeys, load_public_key
from consent.tree_head import SignedTreeHead

pytestmark = pytest.mark.unit


def test_keys_are_created_once_private_and_reloaded(tmp_path: Path) -> None:
    first = LedgerKeys.load_or_create(tmp_path)
    again = LedgerKeys.load_or_create(tmp_path)

    assert first.key_id == again.key_id
    assert first.keyer.key_of("alice") == again.keyer.key_of("alice")
    for name in ("consent_ed25519.pem", "consent_subject.key"):
        assert (tmp_path / "keys" / name).stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in repr(first)
    pub = load_public_key((tmp_path / "keys" / "consent_ed25519.pub.pem").read_bytes())
    assert pub.public_bytes_raw() == first.public_key.public_bytes_raw()


def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    LedgerKeys.load_or_create(tmp_path)
    os.chmod(tmp_path / "keys" / "consent_ed25519.pem", 0o644)
    with pytest.raises(LedgerKeyError, match="chmod 600"):
        LedgerKeys.load_or_create(tmp_path)


def test_malformed_key_file_is_refused(tmp_path: Path) -> None:
    LedgerKeys.load_or_create(tmp_path)
    (tmp_path / "keys" / "consent_ed25519.pem").write_bytes(b"not a key")
    with pytest.raises(LedgerKeyError):
        LedgerKeys.load_or_create(tmp_path)


def test_tree_head_signature_binds_every_field() -> None:
    keys = LedgerKeys.generate()
    head = SignedTreeHead.sign(5, b"\x01" * 32, datetime(2026, 1, 1, tzinfo=UTC), keys)
    assert head.verify(keys.public_key)
    assert SignedTreeHead.from_dict(head.to_dict()) == head
    for change in (
        {"tree_size": 6},
        {"root_hash": b"\x02" * 32},
        {"timestamp": datetime(2026, 1, 2, tzinfo=UTC)},
    ):
        fields = {
            "tree_size": head.tree_size,
            "root_hash": head.root_hash,
            "timestamp": head.timestamp,
            "key_id": head.key_id,
            "signature": head.signature,
            **change,
        }
        forged = SignedTreeHead(**fields)
        assert not forged.verify(keys.public_key)
    assert not head.verify(LedgerKeys.generate().public_key)
