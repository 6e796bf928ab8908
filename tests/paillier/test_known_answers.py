"""Known-answer tests on a tiny key (p=293, q=433) with injected randomness."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import gmpy2
import pytest
from phe import paillier  # type: ignore[import-untyped]

from pec.paillier import KeyPair, PaillierEngine, encode_int_vector, hazmat

pytestmark = pytest.mark.unit

KAT: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "paillier_kat.json").read_text(encoding="utf-8")
)
N = KAT["p"] * KAT["q"]


@pytest.fixture(scope="module")
def tiny() -> KeyPair:
    return KeyPair.from_primes(KAT["p"], KAT["q"], x=KAT["x"])


@pytest.mark.parametrize("v", KAT["textbook"], ids=lambda v: f"m={v['m']},r={v['r']}")
def test_textbook_encryption_matches_vector_and_phe(v: dict[str, int]) -> None:
    # Prepare
    phe_public = paillier.PaillierPublicKey(N)

    # Execute
    ours = hazmat.raw_encrypt(N, v["m"], v["r"])
    theirs = phe_public.raw_encrypt(v["m"], r_value=v["r"])

    # Assert
    assert ours == v["c"] == theirs
    assert hazmat.raw_decrypt(KAT["p"], KAT["q"], v["c"]) == v["m"]


def test_public_fixed_base_matches_vector(tiny: KeyPair) -> None:
    assert tiny.public_key.h_s == KAT["h_s"]
    assert tiny.public_key.obfuscator_bits == 9


@pytest.mark.parametrize("v", KAT["djn"], ids=lambda v: f"m={v['m']},a={v['a']}")
@pytest.mark.parametrize("holder", [False, True], ids=["public", "key-holder-crt"])
def test_engine_encryption_with_injected_exponent(
    tiny: KeyPair, v: dict[str, int], holder: bool
) -> None:
    # Prepare: randbits returns the vector's exponent
    engine = PaillierEngine(
        tiny.public_key,
        tiny.private_key if holder else None,
        workers=1,
        randbits=lambda bits: v["a"],
    )
    m = v["m"] - N if v["m"] > N // 2 else v["m"]

    # Execute
    encrypted = engine.encrypt_encoded(encode_int_vector([m]))

    # Assert
    assert encrypted.ciphertexts == (v["c"],)
    assert hazmat.raw_djn_obfuscator(N, KAT["h_s"], v["a"]) * (1 + v["m"] * N) % (N * N) == v["c"]


@pytest.mark.parametrize("v", KAT["djn"], ids=lambda v: f"m={v['m']}")
def test_decryption_of_vectors(tiny: KeyPair, v: dict[str, int]) -> None:
    assert tiny.private_key.raw_decrypt(v["c"]) == v["m"]


def test_fixed_base_table_equals_powmod() -> None:
    rng = random.Random(5)
    modulus = 1000003 * 999983
    for window in (5, 8):
        table = hazmat.FixedBaseTable(12345, modulus, exponent_bits=40, window_bits=window)
        for _ in range(50):
            a = rng.getrandbits(40)
            assert table.power(a) == pow(12345, a, modulus)
        with pytest.raises(ValueError):
            table.power(1 << 40)


@pytest.mark.parametrize("split", [False, True], ids=["full", "split"])
@pytest.mark.parametrize(
    ("window", "bits"),
    [(1, 1024), (7, 1024), (8, 1024), (11, 1024), (12, 1024), (13, 1024), (16, 100)],
)
def test_fixed_base_table_batches_equal_powmod(window: int, bits: int, split: bool) -> None:
    # Prepare: production-length exponents, a modulus r² with a 256-bit prime r for speed, widths
    # that do and do not divide the exponent length, up to the 16-bit limit (shorter exponents
    # there: 2^16 entries per row); "split" stores entries as y·(1 + r·λ)
    rng = random.Random(7)
    root = int(gmpy2.next_prime(rng.getrandbits(256) | (1 << 255)))
    modulus = root * root
    base = rng.randrange(2, modulus)
    exps = [0, 1, (1 << bits) - 1] + [rng.getrandbits(bits) for _ in range(20)]
    factors = [rng.randrange(1, modulus) for _ in exps]
    table = hazmat.FixedBaseTable(
        base, modulus, exponent_bits=bits, window_bits=window, modulus_root=root if split else None
    )

    # Execute
    columns = table.digits(exps)
    powers = table.powers(exps)
    scaled = table.powers_from_digits(columns, factors)

    # Assert
    assert len(columns) == -(-bits // window)
    rebuilt = [sum(col[i] << (window * t) for t, col in enumerate(columns)) for i in range(23)]
    assert rebuilt == exps
    assert powers == [pow(base, a, modulus) for a in exps]
    assert scaled == [
        f * pow(base, a, modulus) % modulus for f, a in zip(factors, exps, strict=True)
    ]
    assert table.powers([]) == []
    assert table.power(exps[-1]) == powers[-1]


@pytest.mark.parametrize("root_bits", [1024, 1100])
def test_split_fixed_base_table_above_and_at_2048_bits_equals_powmod(root_bits: int) -> None:
    # one reduction per window above a 2048-bit modulus (n² in production), per two windows at
    # or below it (p², q²): both equal powmod
    rng = random.Random(root_bits)
    root = int(gmpy2.next_prime(rng.getrandbits(root_bits) | (1 << (root_bits - 1))))
    base = rng.randrange(2, root * root)
    exps = [rng.getrandbits(96) for _ in range(9)]
    table = hazmat.FixedBaseTable(base, root * root, 96, 6, modulus_root=root)
    assert table.powers(exps) == [pow(base, a, root * root) for a in exps]


def test_split_fixed_base_table_with_a_non_unit_base_falls_back_to_full_residues() -> None:
    # a base sharing the factor r with the modulus r² has no y·(1 + r·λ) form
    root = 1000003
    table = hazmat.FixedBaseTable(
        root * 7, root * root, exponent_bits=30, window_bits=4, modulus_root=root
    )
    assert table.powers([0, 1, 2, 12345]) == [
        pow(root * 7, a, root * root) for a in (0, 1, 2, 12345)
    ]
    with pytest.raises(ValueError):
        hazmat.FixedBaseTable(3, root * root, exponent_bits=30, modulus_root=root + 2)


def test_fixed_base_table_rejects_out_of_range_batches() -> None:
    table = hazmat.FixedBaseTable(3, 1000003, exponent_bits=20, window_bits=12)
    with pytest.raises(ValueError):
        table.powers([5, 1 << 20])
    with pytest.raises(ValueError):
        table.powers([-1])
    with pytest.raises(ValueError):
        table.powers_from_digits([[1]])  # one column for a two-window table


def test_multi_exponentiation_equals_naive() -> None:
    rng = random.Random(6)
    modulus = 1000003 * 999983
    bases = [rng.randrange(2, modulus) for _ in range(40)]
    exps = [rng.getrandbits(rng.randrange(0, 20)) for _ in range(40)]
    expected = 1
    for b, e in zip(bases, exps, strict=True):
        expected = expected * pow(b, e, modulus) % modulus
    for window in (1, 3, 8, 13):
        assert hazmat.multi_exponentiate(bases, exps, modulus, window) == expected


def test_raw_homomorphisms() -> None:
    p, q = KAT["p"], KAT["q"]
    c1 = hazmat.raw_encrypt(N, 100, 5)
    c2 = hazmat.raw_encrypt(N, 23, 7)
    assert hazmat.raw_decrypt(p, q, hazmat.raw_add(N, c1, c2)) == 123
    assert hazmat.raw_decrypt(p, q, hazmat.raw_mul(N, c1, 3)) == 300
    assert hazmat.raw_decrypt(p, q, hazmat.raw_mul(N, c1, -1)) == N - 100
