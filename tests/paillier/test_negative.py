"""Misuse is refused with the documented errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pec.paillier import (
    EncodedMatrix,
    EncodingOverflowError,
    ExponentMismatchError,
    KeyMismatchError,
    KeyPair,
    PackingOverflowError,
    PaillierEngine,
    PaillierError,
    ShapeError,
    SlotLayout,
    encode_int_vector,
    encode_matrix,
    encode_vector,
)

pytestmark = pytest.mark.unit


def test_decrypt_with_wrong_key_is_refused(brand: PaillierEngine, other_keys: KeyPair) -> None:
    other = PaillierEngine(other_keys.public_key, other_keys.private_key, workers=1)
    with pytest.raises(KeyMismatchError):
        other.decrypt(brand.encrypt([1.0]))


def test_adding_vectors_under_different_keys_is_refused(
    brand: PaillierEngine, other_keys: KeyPair
) -> None:
    other = PaillierEngine(other_keys.public_key, workers=1)
    with pytest.raises(KeyMismatchError):
        _ = brand.encrypt([1.0]) + other.encrypt([1.0])


def test_public_engine_cannot_decrypt(brand: PaillierEngine, partner: PaillierEngine) -> None:
    with pytest.raises(KeyMismatchError):
        partner.decrypt(brand.encrypt([1.0]))


def test_mismatched_private_key_is_refused(keys: KeyPair, other_keys: KeyPair) -> None:
    with pytest.raises(KeyMismatchError):
        PaillierEngine(keys.public_key, other_keys.private_key)


def test_mismatched_exponents_are_refused(brand: PaillierEngine) -> None:
    a = brand.encrypt([1.0], frac_bits=10)
    b = brand.encrypt([1.0], frac_bits=12)
    with pytest.raises(ExponentMismatchError):
        _ = a + b
    with pytest.raises(ExponentMismatchError):
        a.add_plain(encode_vector([1.0], 12))


def test_mismatched_lengths_are_refused(brand: PaillierEngine, partner: PaillierEngine) -> None:
    a = brand.encrypt([1.0, 2.0])
    with pytest.raises(ShapeError):
        _ = a + brand.encrypt([1.0])
    with pytest.raises(ShapeError):
        a.add_plain(encode_vector([1.0]))
    with pytest.raises(ShapeError):
        partner.transpose_dot(encode_matrix(np.ones((3, 2))), a)


def test_wrong_types_are_refused(brand: PaillierEngine) -> None:
    with pytest.raises(ShapeError):
        brand.encrypt([[1.0, 2.0]])
    with pytest.raises(ShapeError):
        brand.encrypt(["one"])  # type: ignore[list-item]
    with pytest.raises(ShapeError):
        encode_int_vector([1.5])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        _ = brand.encrypt([1.0]) + 1  # type: ignore[operator]


def test_non_finite_and_too_large_values_are_refused(brand: PaillierEngine) -> None:
    with pytest.raises(EncodingOverflowError):
        brand.encrypt([float("nan")])
    with pytest.raises(EncodingOverflowError):
        brand.encrypt([2.0**60], frac_bits=24)
    huge = encode_int_vector([1 << 600])
    with pytest.raises(EncodingOverflowError):
        brand.encrypt_encoded(huge)


def test_growth_beyond_plaintext_range_is_refused(brand: PaillierEngine) -> None:
    big = brand.encrypt_encoded(encode_int_vector([1 << 300]))
    matrix = EncodedMatrix(ints=np.array([[1]], dtype=np.int64), exponent=0, bound_bits=300)
    with pytest.raises(EncodingOverflowError):
        brand.transpose_dot(matrix, big)


def test_wrapped_plaintext_is_detected_at_decryption(brand: PaillierEngine, keys: KeyPair) -> None:
    # Prepare: a ciphertext whose claimed bound is smaller than its content
    real = brand.encrypt_encoded(encode_int_vector([1 << 40]))
    lying = type(real)(real.public_key, real.ciphertexts, 0, 8)

    # Execute / Assert
    with pytest.raises(EncodingOverflowError):
        brand.decrypt(lying)


def test_packing_refuses_values_too_wide(brand: PaillierEngine, partner: PaillierEngine) -> None:
    with pytest.raises(PackingOverflowError):
        brand.encrypt_packed(encode_int_vector([300]), SlotLayout(value_bits=8))
    encrypted = brand.encrypt_encoded(encode_int_vector([1 << 20]))
    with pytest.raises(PackingOverflowError):
        partner.pack(encrypted, SlotLayout(value_bits=8))
    with pytest.raises(PackingOverflowError):
        SlotLayout(value_bits=600).slots_for(512)


def test_private_key_does_not_serialize_or_print(keys: KeyPair) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(keys.private_key)
    for text in (repr(keys), repr(keys.private_key)):
        assert str(keys.private_key.p) not in text
        assert str(keys.private_key.q) not in text
        assert keys.public_key.fingerprint in text


def test_errors_share_the_package_root() -> None:
    for exc in (KeyMismatchError, ExponentMismatchError, ShapeError):
        assert issubclass(exc, PaillierError)
        assert issubclass(exc, ValueError)
    assert issubclass(EncodingOverflowError, OverflowError)


def test_key_size_is_checked() -> None:
    with pytest.raises(ValueError):
        KeyPair.generate(128)
