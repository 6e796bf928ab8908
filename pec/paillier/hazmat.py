"""Raw Paillier primitives on integers.

HAZARDOUS MATERIALS. You probably want :class:`pec.paillier.PaillierEngine`, which picks the
randomness, checks keys, exponents, lengths and overflow for you. The functions here do none of
that: they take the randomness from the caller, accept any integer, and wrap silently modulo ``n``.
They exist for known-answer tests, for the engine's worker processes and for reviewers who want to
read the arithmetic in one place.

Conventions: the generator is ``g = n + 1``, so ``g^m = 1 + m·n (mod n²)``. An obfuscator is an
``n``-th residue ``ρ`` modulo ``n²``; a ciphertext is ``(1 + m·n)·ρ mod n²``. Two ways to get ``ρ``:

* textbook: ``ρ = r^n mod n²`` for a uniform ``r`` in ``Z*_n`` (one full exponentiation);
* fixed base (Damgård–Jurik–Nielsen): ``ρ = h_s^a mod n²`` with the public ``h_s = h^n mod n²``
  and a short uniform exponent ``a`` of ``⌈k/2⌉`` bits, evaluated with a precomputed
  :class:`FixedBaseTable`. See ``docs/paillier.md`` for the security argument.

This module never logs anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gmpy2
import numpy as np

Mpz = Any  # gmpy2.mpz; gmpy2 ships no usable type information


def raw_encrypt(n: int, plaintext: int, r: int) -> Mpz:
    """Textbook Paillier encryption ``(1 + m·n)·r^n mod n²`` with caller-supplied ``r``.

    Does not check that ``r`` is a unit modulo ``n`` nor reduce ``plaintext``; negative plaintexts
    must already be represented modulo ``n``.
    """
    nn = gmpy2.mpz(n)
    nsq = nn * nn
    return (1 + gmpy2.mpz(plaintext) * nn) % nsq * gmpy2.powmod(r, nn, nsq) % nsq


def raw_encrypt_with_obfuscator(n: int, plaintext: int, obfuscator: int) -> Mpz:
    """Paillier encryption ``(1 + m·n)·ρ mod n²`` with a caller-supplied obfuscator ``ρ``."""
    nn = gmpy2.mpz(n)
    nsq = nn * nn
    return (1 + gmpy2.mpz(plaintext) % nn * nn) * obfuscator % nsq


def raw_djn_obfuscator(n: int, h_s: int, a: int) -> Mpz:
    """The fixed-base obfuscator ``h_s^a mod n²`` by plain exponentiation (reference version)."""
    nn = gmpy2.mpz(n)
    return gmpy2.powmod(h_s, a, nn * nn)


def raw_add(n: int, c1: int, c2: int) -> Mpz:
    """Homomorphic addition: the ciphertext of ``m1 + m2 mod n``."""
    nn = gmpy2.mpz(n)
    return gmpy2.mpz(c1) * c2 % (nn * nn)


def raw_mul(n: int, c: int, k: int) -> Mpz:
    """Homomorphic multiplication by a plaintext integer ``k`` (negative ``k`` allowed)."""
    nn = gmpy2.mpz(n)
    nsq = nn * nn
    if k < 0:
        return gmpy2.powmod(gmpy2.invert(c, nsq), -k, nsq)
    return gmpy2.powmod(c, k, nsq)


def raw_decrypt(p: int, q: int, c: int) -> Mpz:
    """Decrypt with the factors of ``n`` by the Chinese remainder theorem; result in ``[0, n)``.

    Same arithmetic as ``phe.PaillierPrivateKey.raw_decrypt`` (for ``g = n + 1``), on gmpy2
    integers so worker processes avoid the conversion to Python ``int``.
    """
    mp, mq = gmpy2.mpz(p), gmpy2.mpz(q)
    psq, qsq = mp * mp, mq * mq
    n = mp * mq
    hp = gmpy2.invert((gmpy2.powmod(n + 1, mp - 1, psq) - 1) // mp, mp)
    hq = gmpy2.invert((gmpy2.powmod(n + 1, mq - 1, qsq) - 1) // mq, mq)
    xp = (gmpy2.powmod(c, mp - 1, psq) - 1) // mp * hp % mp
    xq = (gmpy2.powmod(c, mq - 1, qsq) - 1) // mq * hq % mq
    u = (xq - xp) * gmpy2.invert(mp, mq) % mq
    return xp + u * mp


def _split_row(row: Sequence[Mpz], root: Mpz) -> tuple[list[Mpz], list[Mpz]]:
    """Write each unit ``T`` of a row modulo ``r²`` as ``y·(1 + r·λ)`` with ``y = T mod r``.

    ``λ = (T div r)·y⁻¹ mod r``, the inverses by Montgomery's batch trick (one inversion per row).
    """
    ys: list[Mpz] = []
    highs: list[Mpz] = []
    for t in row:
        high, y = gmpy2.f_divmod(t, root)
        ys.append(y)
        highs.append(high)
    prefix = [gmpy2.mpz(1)]
    for y in ys:
        prefix.append(prefix[-1] * y % root)
    inv = gmpy2.invert(prefix[-1], root)
    lambdas: list[Mpz] = [gmpy2.mpz(0)] * len(ys)
    for i in range(len(ys) - 1, -1, -1):
        lambdas[i] = highs[i] * (inv * prefix[i] % root) % root
        inv = inv * ys[i] % root
    return ys, lambdas


class FixedBaseTable:
    """Precomputed powers of a fixed base for fast ``base^a mod m`` with ``a < 2^exponent_bits``.

    The table holds ``base^(d·2^(w·t))`` for every window ``t`` and digit ``d < 2^w``, so one
    exponentiation costs one modular multiplication per ``w``-bit window of the exponent and no
    squaring (a comb without doubling). Memory: ``⌈bits/w⌉·2^w`` residues.

    When the modulus is a square ``r²`` and ``modulus_root = r`` is given (``n²``, ``p²``, ``q²``
    in Paillier), every entry ``T`` is stored as ``y = T mod r`` (half size) and ``λ`` with
    ``T ≡ y·(1 + r·λ) (mod r²)``. Since ``(1 + r·λ)(1 + r·μ) ≡ 1 + r·(λ + μ) (mod r²)``, a
    product of entries is ``(∏ y)·(1 + r·Σλ) mod r²``: each window then costs a multiplication by
    a half-size ``y`` (about half the work of a full one) and the addition of a ``λ``, and one full
    multiplication at the end. The results are the same integers either way; a base that is not a
    unit modulo ``r`` keeps full residues.
    """

    __slots__ = ("_lambdas", "_paired", "_root", "_rows", "exponent_bits", "modulus", "window_bits")

    def __init__(
        self,
        base: int,
        modulus: int,
        exponent_bits: int,
        window_bits: int = 8,
        *,
        modulus_root: int | None = None,
    ) -> None:
        if exponent_bits < 1 or not 1 <= window_bits <= 16:
            raise ValueError("exponent_bits must be >= 1 and window_bits in [1, 16]")
        m = gmpy2.mpz(modulus)
        if modulus_root is not None and modulus_root * modulus_root != m:
            raise ValueError("modulus_root squared is not the modulus")
        self.modulus = m
        self.exponent_bits = exponent_bits
        self.window_bits = window_bits
        step = gmpy2.mpz(base) % m
        # the split needs every entry to be a unit modulo r: true exactly when the base is one
        root = None
        if modulus_root is not None and modulus_root > 1 and gmpy2.gcd(step, modulus_root) == 1:
            root = gmpy2.mpz(modulus_root)
        rows: list[list[Mpz]] = []
        lambdas: list[list[Mpz]] = []
        for _ in range((exponent_bits + window_bits - 1) // window_bits):
            row = [gmpy2.mpz(1), step]
            for _ in range(2, 1 << window_bits):
                row.append(row[-1] * step % m)
            step = row[-1] * step % m
            if root is None:
                rows.append(row)
            else:  # each split row replaces its full one as soon as it is built (peak memory)
                ys, lams = _split_row(row, root)
                rows.append(ys)
                lambdas.append(lams)
        self._rows = rows
        self._root: Mpz | None = root
        self._lambdas: list[list[Mpz]] | None = lambdas if root is not None else None
        # With half-size factors and a modulus of up to 2048 bits (the key holder's p², q²), one
        # reduction per two windows is about 10 % cheaper than one per window with gmpy2 2.3 here;
        # for n² (4096 bits) it is dearer, so those tables reduce every window.
        self._paired = root is not None and m.bit_length() <= 2048

    def power(self, exponent: int) -> Mpz:
        """``base^exponent mod modulus`` for ``0 <= exponent < 2^exponent_bits``.

        Raises:
            ValueError: the exponent is out of the table's range.
        """
        return self.powers([exponent])[0]

    def digits(self, exponents: Sequence[int]) -> list[list[int]]:
        """The ``w``-bit digits of every exponent, one list per window (column-major).

        ``digits(e)[t][i]`` is bits ``w·t … w·t + w − 1`` of ``exponents[i]``. Extracted for the
        whole batch at once with numpy from the exponents' bytes, not by big-integer shifts.

        Raises:
            ValueError: an exponent is out of the table's range.
        """
        windows = len(self._rows)
        if any(e < 0 or e >> self.exponent_bits for e in exponents):
            raise ValueError("exponent out of the table's range")
        if not exponents:
            return [[] for _ in range(windows)]
        w = self.window_bits
        # two spare bytes so that every digit can be read as a 24-bit little-endian word
        width = (windows * w + 7) // 8 + 2
        raw = b"".join(int(e).to_bytes(width, "little") for e in exponents)
        octets = np.frombuffer(raw, dtype=np.uint8).reshape(len(exponents), width)
        octets = octets.astype(np.uint32)
        offsets = np.arange(windows) * w
        first = offsets >> 3
        words = octets[:, first] | octets[:, first + 1] << 8 | octets[:, first + 2] << 16
        digits = (words >> (offsets & 7).astype(np.uint32)) & ((1 << w) - 1)
        columns: list[list[int]] = digits.T.tolist()
        return columns

    def powers(self, exponents: Sequence[int]) -> list[Mpz]:
        """``base^e mod modulus`` for every ``e`` in ``exponents`` (see :meth:`powers_from_digits`).

        Raises:
            ValueError: an exponent is out of the table's range.
        """
        return self.powers_from_digits(self.digits(exponents))

    def powers_from_digits(
        self, columns: Sequence[Sequence[int]], factors: Sequence[Mpz] | None = None
    ) -> list[Mpz]:
        """``factors[i]·base^e_i mod modulus`` from the column-major digits of :meth:`digits`.

        Window by window over the whole batch rather than exponent by exponent: each step reads
        one table row (``2^w`` residues) for every exponent, so the row stays in cache instead of
        every lookup missing it (the tables of wide windows are far larger than the caches).
        ``factors`` (default 1) are multiplied in for free as the accumulators' start values.
        """
        m = self.modulus
        rows = self._rows
        if len(columns) != len(rows):
            raise ValueError("digit columns do not match the table's windows")
        first = rows[0]
        if factors is None:
            accs = [first[d] for d in columns[0]]
        else:
            accs = [f * first[d] % m for f, d in zip(factors, columns[0], strict=True)]
        t = 1
        if self._paired:  # two half-size factors per reduction (measured cheaper there)
            for t in range(1, len(rows) - 1, 2):
                r1, r2, c1, c2 = rows[t], rows[t + 1], columns[t], columns[t + 1]
                accs = [a * r1[d1] * r2[d2] % m for a, d1, d2 in zip(accs, c1, c2, strict=True)]
            t = len(rows) - (len(rows) - 1) % 2
        for row, column in zip(rows[t:], columns[t:], strict=True):
            accs = [a * row[d] % m for a, d in zip(accs, column, strict=True)]
        if self._lambdas is None or self._root is None:
            return accs
        r = self._root
        sums = [self._lambdas[0][d] for d in columns[0]]
        for lambdas, column in zip(self._lambdas[1:], columns[1:], strict=True):
            sums = [s + lambdas[d] for s, d in zip(sums, column, strict=True)]
        return [a * (1 + r * (s % r)) % m for a, s in zip(accs, sums, strict=True)]


def multi_exponentiate(
    bases: Sequence[Mpz], exponents: Sequence[int], modulus: int, window_bits: int
) -> Mpz:
    """``∏ bases[i]^exponents[i] mod modulus`` for non-negative exponents (bucket method).

    Pippenger's bucket method: per ``w``-bit window, each base is multiplied into the bucket of its
    digit, and the buckets are combined as ``∏ B_d^d`` with two running products. Cost per window:
    one multiplication per base with a non-zero digit plus ``2·2^w``; far cheaper than one
    exponentiation per base when the exponents are short fixed-point integers.
    """
    m = gmpy2.mpz(modulus)
    top = max(exponents, default=0)
    if top < 0 or min(exponents, default=0) < 0:
        raise ValueError("exponents must be non-negative")
    w = window_bits
    mask = (1 << w) - 1
    windows = max(1, (int(top).bit_length() + w - 1) // w)
    one = gmpy2.mpz(1)
    result = one
    for t in reversed(range(windows)):
        if result != 1:
            result = gmpy2.powmod(result, 1 << w, m)
        shift = t * w
        buckets: list[Mpz] = [one] * (mask + 1)
        for c, e in zip(bases, exponents, strict=True):
            d = (e >> shift) & mask
            if d:
                buckets[d] = buckets[d] * c % m
        running = one
        total = one
        for d in range(mask, 0, -1):
            b = buckets[d]
            if b != 1:
                running = running * b % m
            if running != 1:
                total = total * running % m
        if total != 1:
            result = result * total % m
    return result


__all__ = [
    "FixedBaseTable",
    "multi_exponentiate",
    "raw_add",
    "raw_decrypt",
    "raw_djn_obfuscator",
    "raw_encrypt",
    "raw_encrypt_with_obfuscator",
    "raw_mul",
]
