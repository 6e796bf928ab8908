"""Small keys for fast tests (2048 bits only in benchmarks)."""

from __future__ import annotations

import pytest

from pec.paillier import KeyPair, PaillierEngine


@pytest.fixture(scope="session")
def keys() -> KeyPair:
    return KeyPair.generate(512)


@pytest.fixture(scope="session")
def other_keys() -> KeyPair:
    return KeyPair.generate(512)


@pytest.fixture(scope="session")
def brand(keys: KeyPair) -> PaillierEngine:
    return PaillierEngine(keys.public_key, keys.private_key, workers=1)


@pytest.fixture(scope="session")
def partner(keys: KeyPair) -> PaillierEngine:
    return PaillierEngine(keys.public_key, workers=1)
