"""Hypothesis properties of the engine on a 512-bit key."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pec.paillier import (
    EncodedMatrix,
    KeyPair,
    PackingOverflowError,
    PaillierEngine,
    SlotLayout,
    encode_int_vector,
    encode_vector,
    hazmat,
)

pytestmark = pytest.mark.unit

ints62 = st.integers(min_value=-(2**62) + 1, max_value=2**62 - 1)

TABLE_MODULUS = 2**127 - 1


@cache
def _table(window: int, bits: int) -> hazmat.FixedBaseTable:
    return hazmat.FixedBaseTable(3, TABLE_MODULUS, exponent_bits=bits, window_bits=window)


@given(
    st.integers(1, 12),
    st.integers(1, 200).flatmap(
        lambda bits: st.tuples(st.just(bits), st.lists(st.integers(0, 2**bits - 1), max_size=8))
    ),
)
def test_fixed_base_batch_digits_and_powers(window: int, case: tuple[int, list[int]]) -> None:
    bits, exps = case
    table = _table(window, bits)
    columns = table.digits(exps)
    rebuilt = [
        sum(col[i] << (window * t) for t, col in enumerate(columns)) for i in range(len(exps))
    ]
    assert rebuilt == exps
    assert table.powers(exps) == [pow(3, a, TABLE_MODULUS) for a in exps]


@given(st.lists(st.tuples(ints62, ints62), min_size=1, max_size=6))
def test_decrypt_of_sum_is_sum(brand: PaillierEngine, pairs: list[tuple[int, int]]) -> None:
    a = encode_int_vector([x for x, _ in pairs])
    b = encode_int_vector([y for _, y in pairs])
    total = brand.encrypt_encoded(a) + brand.encrypt_encoded(b)
    assert brand.decrypt_encoded(total).ints == tuple(x + y for x, y in pairs)


@given(st.lists(st.tuples(ints62, ints62), min_size=1, max_size=6))
def test_add_plain(brand: PaillierEngine, pairs: list[tuple[int, int]]) -> None:
    a = brand.encrypt_encoded(encode_int_vector([x for x, _ in pairs]))
    b = encode_int_vector([y for _, y in pairs])
    assert brand.decrypt_encoded(a.add_plain(b)).ints == tuple(x + y for x, y in pairs)


@given(
    st.lists(
        st.tuples(st.integers(-(2**40), 2**40), st.integers(-(2**15) + 1, 2**15 - 1)),
        min_size=1,
        max_size=8,
    )
)
def test_scalar_multiply_and_transpose_dot(
    brand: PaillierEngine, partner: PaillierEngine, rows: list[tuple[int, int]]
) -> None:
    # Prepare: r encrypted by the key holder, x a one-column plain matrix at the peer
    r = [v for v, _ in rows]
    x = np.array([[k] for _, k in rows], dtype=np.int64)
    bound = int(np.max(np.abs(x))).bit_length()
    matrix = EncodedMatrix(ints=x, exponent=-3, bound_bits=bound)

    # Execute
    product = partner.transpose_dot(matrix, brand.encrypt_encoded(encode_int_vector(r, -5)))

    # Assert
    decoded = brand.decrypt_encoded(product)
    assert decoded.ints == (sum(v * k for v, k in rows),)
    assert decoded.exponent == -8


@given(
    st.integers(min_value=2, max_value=60).flatmap(
        lambda b: st.tuples(
            st.just(b),
            st.lists(st.integers(-(2 ** (b - 1)), 2 ** (b - 1) - 1), min_size=0, max_size=30),
        )
    )
)
def test_layout_round_trip(case: tuple[int, list[int]]) -> None:
    bits, values = case
    layout = SlotLayout(value_bits=bits, max_terms=3)
    assert layout.unpack(layout.pack(values), len(values)) == values


@given(st.lists(st.integers(-(2**29), 2**29 - 1), min_size=1, max_size=40), st.integers(1, 4))
def test_packed_encryption_round_trip_and_sums(
    brand: PaillierEngine, values: list[int], terms: int
) -> None:
    layout = SlotLayout(value_bits=30, max_terms=4)
    packed = brand.encrypt_packed(encode_int_vector(values), layout)
    total = packed
    for _ in range(terms - 1):
        total = total + packed
    assert brand.decrypt_packed(total).ints == tuple(v * terms for v in values)
    assert len(packed.ciphertexts) == -(-len(values) // brand.slots(layout))


@given(st.lists(st.integers(-(2**20), 2**20), min_size=1, max_size=12))
def test_homomorphic_pack_of_encrypted_vector(
    brand: PaillierEngine, partner: PaillierEngine, values: list[int]
) -> None:
    encrypted = brand.encrypt_encoded(encode_int_vector(values, -4))
    packed = partner.pack(encrypted, SlotLayout(value_bits=max(encrypted.bound_bits + 1, 2)))
    decoded = brand.decrypt_packed(packed)
    assert decoded.ints == tuple(values)
    assert decoded.exponent == -4


def test_packed_sum_beyond_headroom_is_refused(brand: PaillierEngine) -> None:
    layout = SlotLayout(value_bits=8, max_terms=2)
    packed = brand.encrypt_packed(encode_int_vector([127, -128, 5]), layout)
    twice = packed + packed
    assert brand.decrypt_packed(twice).ints == (254, -256, 10)
    with pytest.raises(PackingOverflowError):
        _ = twice + packed


def test_guard_bit_detects_out_of_range_slot(brand: PaillierEngine, keys: KeyPair) -> None:
    # Prepare: a peer smuggles a slot value beyond value_bits by scaling a ciphertext
    layout = SlotLayout(value_bits=8, max_terms=1)
    packed = brand.encrypt_packed(encode_int_vector([100]), layout)
    nsq = keys.public_key.nsquare
    tampered = type(packed)(
        packed.public_key, (pow(packed.ciphertexts[0], 5, nsq),), layout, 1, 0, 1
    )

    # Execute / Assert
    with pytest.raises(PackingOverflowError):
        brand.decrypt_packed(tampered)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=10))
def test_float_round_trip(brand: PaillierEngine, values: list[float]) -> None:
    decoded = brand.decrypt(brand.encrypt(values, frac_bits=16))
    np.testing.assert_allclose(decoded, values, atol=2**-16)
    assert encode_vector(values, 16).exponent == -16
