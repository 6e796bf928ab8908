"""Engine behaviour: parallel equals inline, precomputation, re-randomization, exports."""

from __future__ import annotations

import random

import numpy as np
import pytest

import pec.paillier
from pec.paillier import (
    DEFAULT_WINDOW_BITS,
    KEY_HOLDER_WINDOW_BITS,
    KeyPair,
    PaillierEngine,
    PublicKey,
    encode_int_vector,
    encode_matrix,
    hazmat,
)

pytestmark = pytest.mark.unit


def test_exported_names() -> None:
    assert sorted(pec.paillier.__all__) == [
        "DEFAULT_FEATURE_BITS",
        "DEFAULT_FRAC_BITS",
        "DEFAULT_KEY_BITS",
        "DEFAULT_WINDOW_BITS",
        "EncodedMatrix",
        "EncodedVector",
        "EncodingOverflowError",
        "EncryptedVector",
        "ExponentMismatchError",
        "KEY_HOLDER_WINDOW_BITS",
        "KeyMismatchError",
        "KeyPair",
        "PackedCiphertexts",
        "PackingOverflowError",
        "PaillierEngine",
        "PaillierError",
        "PrivateKey",
        "PublicKey",
        "ShapeError",
        "SlotLayout",
        "encode_int_vector",
        "encode_matrix",
        "encode_vector",
    ]
    assert pec.paillier.DEFAULT_KEY_BITS == 2048


def test_key_holder_crt_and_public_paths_give_identical_ciphertexts(keys: KeyPair) -> None:
    values = np.linspace(-3, 3, 9)
    crt = PaillierEngine(
        keys.public_key, keys.private_key, workers=1, randbits=random.Random(1).getrandbits
    )
    pub = PaillierEngine(keys.public_key, workers=1, randbits=random.Random(1).getrandbits)
    assert crt.encrypt(values).ciphertexts == pub.encrypt(values).ciphertexts


@pytest.mark.parametrize("window", [5, 8, 11, 12, 13])
def test_every_window_width_gives_the_window_8_ciphertexts(keys: KeyPair, window: int) -> None:
    # Prepare: the same exponents (seeded) through the reference path (public key, window 8)
    values = np.linspace(-2, 2, 7)
    reference = PaillierEngine(
        keys.public_key, workers=1, window_bits=8, randbits=random.Random(4).getrandbits
    ).encrypt(values)

    # Execute: key holder (CRT) and public path with another window
    crt = PaillierEngine(
        keys.public_key,
        keys.private_key,
        workers=1,
        window_bits=window,
        randbits=random.Random(4).getrandbits,
    ).encrypt(values)
    pub = PaillierEngine(
        keys.public_key, workers=1, window_bits=window, randbits=random.Random(4).getrandbits
    ).encrypt(values)

    # Assert: bit-identical ciphertexts, each (1 + m·n)·h_s^a with the same a
    assert crt.ciphertexts == reference.ciphertexts
    assert pub.ciphertexts == reference.ciphertexts


def test_window_defaults_by_role_and_range(keys: KeyPair) -> None:
    assert PaillierEngine(keys.public_key, workers=1).window_bits == DEFAULT_WINDOW_BITS
    holder = PaillierEngine(keys.public_key, keys.private_key, workers=1)
    assert holder.window_bits == KEY_HOLDER_WINDOW_BITS
    for bad in (0, 17):
        with pytest.raises(ValueError):
            PaillierEngine(keys.public_key, workers=1, window_bits=bad)


@pytest.mark.parametrize("count", [1, 5, 6000, 16_385, 100_000, 100_003])
def test_chunks_are_balanced_over_the_workers(keys: KeyPair, count: int) -> None:
    engine = PaillierEngine(keys.public_key, workers=2, chunk_size=4096)
    size = engine._chunk_size_for(count)
    tasks = -(-count // size)
    assert size <= 4096
    assert tasks % 2 == 0 or count < 16  # tiny batches may leave a worker idle
    assert count - (tasks - 1) * size > 0  # no empty last task
    assert size - (count - (tasks - 1) * size) < tasks  # near-equal sizes


@pytest.mark.integration
def test_worker_processes_match_inline(keys: KeyPair) -> None:
    # Prepare
    rng = np.random.default_rng(3)
    r = rng.uniform(-1, 1, 300)
    x = encode_matrix(rng.normal(size=(300, 4)))
    inline = PaillierEngine(
        keys.public_key, keys.private_key, workers=1, randbits=random.Random(2).getrandbits
    )
    with PaillierEngine(
        keys.public_key,
        keys.private_key,
        workers=2,
        chunk_size=64,
        randbits=random.Random(2).getrandbits,
    ) as parallel:
        # Execute
        enc_parallel = parallel.encrypt(r)
        enc_inline = inline.encrypt(r)
        grad = parallel.transpose_dot(x, enc_parallel)

        # Assert
        assert enc_parallel.ciphertexts == enc_inline.ciphertexts
        np.testing.assert_allclose(parallel.decrypt(enc_parallel), r, atol=2**-23)
        expected = x.ints.T.astype(np.float64) @ r * 2.0**x.exponent
        np.testing.assert_allclose(parallel.decrypt(grad), expected, atol=1e-3)


def test_precomputed_obfuscators_are_used_once(keys: KeyPair) -> None:
    engine = PaillierEngine(keys.public_key, keys.private_key, workers=1)
    engine.precompute(5)
    assert engine.precomputed == 5
    first = engine.encrypt([1.0, 1.0, 1.0])
    assert engine.precomputed == 2
    second = engine.encrypt([1.0, 1.0, 1.0])  # 2 from stock, 1 fresh
    assert engine.precomputed == 0
    cts = set(first.ciphertexts) | set(second.ciphertexts)
    assert len(cts) == 6
    np.testing.assert_array_equal(engine.decrypt(second), [1.0, 1.0, 1.0])


def test_rerandomize_changes_ciphertext_not_plaintext(
    brand: PaillierEngine, partner: PaillierEngine
) -> None:
    encrypted = brand.encrypt([0.5, -0.25])
    fresh = partner.rerandomize(encrypted)
    assert set(fresh.ciphertexts).isdisjoint(encrypted.ciphertexts)
    np.testing.assert_array_equal(brand.decrypt(fresh), [0.5, -0.25])


def test_engine_repr_hides_keys(brand: PaillierEngine, keys: KeyPair) -> None:
    assert str(keys.private_key.p) not in repr(brand)
    assert "can_decrypt=True" in repr(brand)


@pytest.mark.integration
def test_precompute_async_fills_the_stock_for_later_encryptions(keys: KeyPair) -> None:
    with PaillierEngine(keys.public_key, keys.private_key, workers=2, chunk_size=4) as engine:
        engine.precompute_async(10)  # returns at once
        encrypted = engine.encrypt(np.arange(12.0))
        assert engine.precomputed == 0  # 10 taken from the stock, 2 computed fresh
        np.testing.assert_array_equal(engine.decrypt(encrypted), np.arange(12.0))
        engine.precompute_async(3)
        assert engine.precomputed == 3


def test_rerandomization_does_not_rely_on_the_announced_base(keys: KeyPair) -> None:
    # Prepare: a key holder announcing a degenerate base h_s = 1 (deterministic "encryption")
    n = keys.public_key.n
    weak = PaillierEngine(PublicKey(n=n, h_s=1), workers=1)
    encrypted = weak.encrypt_encoded(encode_int_vector([5]))
    assert encrypted.ciphertexts[0] == 1 + 5 * n

    # Execute
    fresh = weak.rerandomize(encrypted)

    # Assert: the textbook re-randomizer still hides it, and the plaintext is unchanged
    assert fresh.ciphertexts[0] != encrypted.ciphertexts[0]
    assert hazmat.raw_decrypt(keys.private_key.p, keys.private_key.q, fresh.ciphertexts[0]) == 5
