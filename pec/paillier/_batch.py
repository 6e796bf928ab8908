"""Pure batch functions over chunks: what the engine maps over its worker processes.

Each function takes plain integers and lists and returns lists, so it can run inline, in a
``ProcessPoolExecutor`` or in any other map (Ray) unchanged. Precomputed tables are cached per
process, keyed by the public key material, and die with the process; nothing is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import gmpy2
import numpy as np
import numpy.typing as npt

from pec.paillier.hazmat import FixedBaseTable, Mpz, multi_exponentiate


@dataclass(frozen=True)
class EncryptSpec:
    """What a worker needs to encrypt: the public key, and optionally the factors for CRT."""

    n: int
    h_s: int
    obfuscator_bits: int
    window_bits: int
    p: int = 0
    q: int = 0


@dataclass(frozen=True)
class _CrtTables:
    psq: Mpz
    qsq: Mpz
    n: Mpz
    nsq: Mpz
    p_inv: Mpz  # (p²)^-1 mod q²
    table_p: FixedBaseTable
    table_q: FixedBaseTable


@lru_cache(maxsize=4)
def _public_table(n: int, h_s: int, bits: int, window: int) -> FixedBaseTable:
    return FixedBaseTable(h_s, n * n, bits, window, modulus_root=n)


@lru_cache(maxsize=4)
def _crt_tables(p: int, q: int, h_s: int, bits: int, window: int) -> _CrtTables:
    mp, mq = gmpy2.mpz(p), gmpy2.mpz(q)
    psq, qsq = mp * mp, mq * mq
    return _CrtTables(
        psq=psq,
        qsq=qsq,
        n=mp * mq,
        nsq=psq * qsq,
        p_inv=gmpy2.invert(psq, qsq),
        table_p=FixedBaseTable(h_s % psq, psq, bits, window, modulus_root=p),
        table_q=FixedBaseTable(h_s % qsq, qsq, bits, window, modulus_root=q),
    )


def encrypt_chunk(spec: EncryptSpec, plaintexts: list[int], exponents: list[int]) -> list[Mpz]:
    """Encrypt ``plaintexts`` (already reduced modulo ``n``) with obfuscators ``h_s^a``.

    ``exponents`` are the short random exponents ``a``, one per plaintext. With the factors in
    ``spec`` the same ciphertexts are computed modulo ``p²`` and ``q²`` and recombined (CRT), from
    one digit extraction shared by both halves; without them, modulo ``n²``. The whole chunk goes
    through the tables window by window (:meth:`FixedBaseTable.powers_from_digits`).
    """
    if len(plaintexts) != len(exponents):
        raise ValueError("one exponent per plaintext")
    if spec.p:
        t = _crt_tables(spec.p, spec.q, spec.h_s, spec.obfuscator_bits, spec.window_bits)
        n, psq, qsq, p_inv = t.n, t.psq, t.qsq, t.p_inv
        columns = t.table_p.digits(exponents)
        gs = [1 + m * n for m in plaintexts]
        cps = t.table_p.powers_from_digits(columns, [g % psq for g in gs])
        cqs = t.table_q.powers_from_digits(columns, [g % qsq for g in gs])
        return [cp + (cq - cp) * p_inv % qsq * psq for cp, cq in zip(cps, cqs, strict=True)]
    table = _public_table(spec.n, spec.h_s, spec.obfuscator_bits, spec.window_bits)
    nn = gmpy2.mpz(spec.n)
    nsq = nn * nn
    return table.powers_from_digits(
        table.digits(exponents), [(1 + m * nn) % nsq for m in plaintexts]
    )


def obfuscator_chunk(spec: EncryptSpec, exponents: list[int]) -> list[Mpz]:
    """Fresh encryptions of zero ``h_s^a mod n²``, used to re-randomize ciphertexts."""
    return encrypt_chunk(spec, [0] * len(exponents), exponents)


def textbook_zero_chunk(n: int, rs: list[int]) -> list[Mpz]:
    """Encryptions of zero ``r^n mod n²`` for the given units ``r`` (re-randomizers)."""
    nn = gmpy2.mpz(n)
    nsq = nn * nn
    return [gmpy2.powmod(r, nn, nsq) for r in rs]


@lru_cache(maxsize=4)
def _decrypt_consts(p: int, q: int) -> tuple[Mpz, Mpz, Mpz, Mpz, Mpz, Mpz, Mpz]:
    mp, mq = gmpy2.mpz(p), gmpy2.mpz(q)
    psq, qsq = mp * mp, mq * mq
    n = mp * mq
    hp = gmpy2.invert((gmpy2.powmod(n + 1, mp - 1, psq) - 1) // mp, mp)
    hq = gmpy2.invert((gmpy2.powmod(n + 1, mq - 1, qsq) - 1) // mq, mq)
    return mp, mq, psq, qsq, hp, hq, gmpy2.invert(mp, mq)


def decrypt_chunk(p: int, q: int, ciphertexts: list[Mpz]) -> list[int]:
    """Decrypt to ``[0, n)`` by CRT (same arithmetic as ``phe``'s ``raw_decrypt``)."""
    mp, mq, psq, qsq, hp, hq, p_inv = _decrypt_consts(p, q)
    out: list[int] = []
    for c in ciphertexts:
        xp = (gmpy2.powmod(c, mp - 1, psq) - 1) // mp * hp % mp
        xq = (gmpy2.powmod(c, mq - 1, qsq) - 1) // mq * hq % mq
        out.append(int(xp + (xq - xp) * p_inv % mq * mp))
    return out


def best_window(rows: int, exponent_bits: int) -> int:
    """The bucket window minimizing ``windows·(rows + 2·2^w)`` multiplications."""
    best, best_cost = 1, None
    for w in range(1, 17):
        windows = -(-exponent_bits // w)
        cost = windows * (rows + 2 * (1 << w))
        if best_cost is None or cost < best_cost:
            best, best_cost = w, cost
    return best


def transpose_dot_chunk(
    nsquare: int, ciphertexts: list[Mpz], matrix: npt.NDArray[np.int64], bound_bits: int
) -> tuple[list[Mpz], Mpz]:
    """Per column ``j``: ``∏ c_i^(x_ij + 2^B)``, and the plain product ``∏ c_i``.

    Every ``|x_ij| < 2^B`` (``B = bound_bits``), so the shifted exponents are non-negative and
    below ``2^(B+1)``; the caller divides by ``(∏ c_i)^(2^B)`` once at the end. This keeps one
    set of buckets per column (no split by sign) and needs no modular inverse per row.
    """
    nsq = gmpy2.mpz(nsquare)
    shifted = matrix.astype(np.int64) + (1 << bound_bits)
    window = best_window(len(ciphertexts), bound_bits + 1)
    out: list[Mpz] = []
    for j in range(matrix.shape[1]):
        out.append(multi_exponentiate(ciphertexts, shifted[:, j].tolist(), nsq, window))
    total = gmpy2.mpz(1)
    for c in ciphertexts:
        total = total * c % nsq
    return out, total
