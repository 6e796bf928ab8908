"""The Paillier engine: vectors in, vectors out, with every check the raw primitives skip.

An :class:`EncryptedVector` is a list of ciphertexts under one key, one shared fixed-point exponent
and a bound on the magnitude of every plaintext. The engine encrypts and decrypts vectors in worker
processes, computes ``X^T·[[r]]`` for a plain integer matrix ``X`` with the bucket method, packs
several values per ciphertext, and re-randomizes results before they leave their holder.

It never logs plaintexts, ciphertexts or keys.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import gmpy2
import numpy as np
import numpy.typing as npt

from pec.paillier import _batch
from pec.paillier._encoding import (
    DEFAULT_FRAC_BITS,
    EncodedMatrix,
    EncodedVector,
    encode_vector,
)
from pec.paillier._keys import PrivateKey, PublicKey
from pec.paillier._packing import SlotLayout
from pec.paillier.errors import (
    EncodingOverflowError,
    ExponentMismatchError,
    KeyMismatchError,
    PackingOverflowError,
    ShapeError,
)
from pec.paillier.hazmat import Mpz

DEFAULT_WINDOW_BITS = 8
"""Comb window of the public-key (modulo ``n²``) fixed-base tables: ``⌈bits/8⌉·256`` residues
(16 MiB per process for a 2048-bit key) for one multiplication per 8 exponent bits."""

KEY_HOLDER_WINDOW_BITS = 12
"""Comb window of the key holder's CRT tables (modulo ``p²`` and ``q²``): ``⌈1024/12⌉ = 86``
multiplications per half instead of 128, for two tables of ``86·4096`` half-size residues (about
200 MiB per worker process at 2048 bits, built in about 2 s when the job starts)."""

RERANDOMIZE_EXTRA_BITS = 128
"""Extra random bits drawn for the textbook ``r`` of a re-randomizer beyond ``bits(n)``, so that
``r mod n`` is within statistical distance ``2^-128`` of uniform."""

DEFAULT_CHUNK = 4096
"""Elements per task sent to a worker process."""


def _bound_ok(bits: int, public_key: PublicKey) -> bool:
    return bits < public_key.max_plaintext.bit_length() - 1


def _checked(public_key: PublicKey, ciphertexts: Sequence[int]) -> tuple[Mpz, ...]:
    nsq = public_key.nsquare
    out = tuple(gmpy2.mpz(c) for c in ciphertexts)
    if any(not 0 < c < nsq for c in out):
        raise ShapeError("a ciphertext is outside (0, n²)")
    return out


def _bound(public_key: PublicKey, bound_bits: int) -> int:
    if bound_bits < 0:
        raise ShapeError("bound_bits must be non-negative")
    if not _bound_ok(bound_bits, public_key):
        raise EncodingOverflowError("the claimed bound does not fit the plaintext range")
    return bound_bits


@dataclass(frozen=True, eq=False)
class EncryptedVector:
    """Ciphertexts of ``m_i · 2^exponent`` under ``public_key``; every ``|m_i| < 2^bound_bits``."""

    public_key: PublicKey
    ciphertexts: tuple[Mpz, ...]
    exponent: int
    bound_bits: int

    def __len__(self) -> int:
        return len(self.ciphertexts)

    @classmethod
    def from_ints(
        cls, public_key: PublicKey, ciphertexts: Sequence[int], exponent: int, bound_bits: int
    ) -> EncryptedVector:
        """Rebuild a vector received from a peer, checking every ciphertext's range.

        Raises:
            ShapeError: a ciphertext is outside ``(0, n²)`` or the bound is negative.
            EncodingOverflowError: the claimed bound does not fit the plaintext range.
        """
        return cls(
            public_key, _checked(public_key, ciphertexts), exponent, _bound(public_key, bound_bits)
        )

    def to_ints(self) -> tuple[int, ...]:
        """The ciphertexts as Python integers (for a wire encoder)."""
        return tuple(int(c) for c in self.ciphertexts)

    def _check_compatible(self, other: EncryptedVector) -> None:
        if not isinstance(other, EncryptedVector):
            raise TypeError("expected an EncryptedVector")
        self.public_key.check_same(other.public_key)
        if other.exponent != self.exponent:
            raise ExponentMismatchError(
                f"exponents differ ({self.exponent} and {other.exponent}); rescale first"
            )
        if len(other) != len(self):
            raise ShapeError(f"lengths differ ({len(self)} and {len(other)})")

    def __add__(self, other: EncryptedVector) -> EncryptedVector:
        """Element-wise homomorphic sum.

        Raises:
            KeyMismatchError: the vectors are under different keys.
            ExponentMismatchError: the exponents differ.
            ShapeError: the lengths differ.
            EncodingOverflowError: the sum could leave the plaintext range.
        """
        self._check_compatible(other)
        bound = max(self.bound_bits, other.bound_bits) + 1
        if not _bound_ok(bound, self.public_key):
            raise EncodingOverflowError("the sum could exceed the plaintext range")
        nsq = self.public_key.nsquare
        cts = tuple(a * b % nsq for a, b in zip(self.ciphertexts, other.ciphertexts, strict=True))
        return EncryptedVector(self.public_key, cts, self.exponent, bound)

    def add_plain(self, plain: EncodedVector) -> EncryptedVector:
        """Add a plaintext vector (same exponent) without any new randomness.

        Raises:
            ExponentMismatchError: the exponents differ.
            ShapeError: the lengths differ.
            EncodingOverflowError: the sum could leave the plaintext range.
        """
        if plain.exponent != self.exponent:
            raise ExponentMismatchError(
                f"exponents differ ({self.exponent} and {plain.exponent}); rescale first"
            )
        if len(plain) != len(self):
            raise ShapeError(f"lengths differ ({len(self)} and {len(plain)})")
        bound = max(self.bound_bits, plain.bound_bits) + 1
        if not _bound_ok(bound, self.public_key):
            raise EncodingOverflowError("the sum could exceed the plaintext range")
        n = self.public_key.n
        nsq = self.public_key.nsquare
        cts = tuple(
            c * ((1 + (m % n) * n) % nsq) % nsq
            for c, m in zip(self.ciphertexts, plain.ints, strict=True)
        )
        return EncryptedVector(self.public_key, cts, self.exponent, bound)


@dataclass(frozen=True, eq=False)
class PackedCiphertexts:
    """``count`` signed values packed ``layout``-wise into ciphertexts, each a sum of ``terms``."""

    public_key: PublicKey
    ciphertexts: tuple[Mpz, ...]
    layout: SlotLayout
    count: int
    exponent: int
    terms: int = 1

    @classmethod
    def from_ints(
        cls,
        public_key: PublicKey,
        ciphertexts: Sequence[int],
        layout: SlotLayout,
        count: int,
        exponent: int,
    ) -> PackedCiphertexts:
        """Rebuild packed ciphertexts received from a peer (one term each), checking ranges.

        Raises:
            ShapeError: a ciphertext is outside ``(0, n²)`` or ``count`` does not match.
        """
        cts = _checked(public_key, ciphertexts)
        slots = layout.slots_for(public_key.n.bit_length())
        if count < 0 or len(cts) != -(-count // slots):
            raise ShapeError("packed count does not match the number of ciphertexts")
        return cls(public_key, cts, layout, count, exponent)

    def to_ints(self) -> tuple[int, ...]:
        """The ciphertexts as Python integers (for a wire encoder)."""
        return tuple(int(c) for c in self.ciphertexts)

    def __add__(self, other: PackedCiphertexts) -> PackedCiphertexts:
        """Slot-wise homomorphic sum.

        Raises:
            KeyMismatchError: different keys.
            ExponentMismatchError: different exponents.
            ShapeError: different layouts or counts.
            PackingOverflowError: the sum would have more terms than the layout has headroom for.
        """
        self.public_key.check_same(other.public_key)
        if other.exponent != self.exponent:
            raise ExponentMismatchError("exponents differ")
        if other.layout != self.layout or other.count != self.count:
            raise ShapeError("packed vectors have different layouts or lengths")
        terms = self.terms + other.terms
        if terms > self.layout.max_terms:
            raise PackingOverflowError(
                f"{terms} terms exceed the layout's headroom of {self.layout.max_terms}"
            )
        nsq = self.public_key.nsquare
        cts = tuple(a * b % nsq for a, b in zip(self.ciphertexts, other.ciphertexts, strict=True))
        return PackedCiphertexts(
            self.public_key, cts, self.layout, self.count, self.exponent, terms
        )


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class PaillierEngine:
    """Batch Paillier operations for one key pair, parallel over worker processes.

    The key holder (the brand) constructs it with its private key, which enables decryption and
    CRT-accelerated encryption; a peer (a data partner) constructs it with the public key only.

    Args:
        public_key: the job's public key.
        private_key: the matching private key, or ``None`` on the peer's side.
        workers: worker processes; ``1`` computes inline (default: the machine's core count).
        window_bits: comb window of the fixed-base tables; default :data:`KEY_HOLDER_WINDOW_BITS`
            with a private key (CRT tables), :data:`DEFAULT_WINDOW_BITS` without.
        chunk_size: elements per worker task.
        randbits: source of random exponents, ``randbits(k) -> int`` uniform in ``[0, 2^k)``.
            Default :func:`secrets.randbits`; tests inject a seeded one.
        start_method: multiprocessing start method of the workers. ``"forkserver"`` (default) is
            safe in a threaded node process; like ``"spawn"`` it needs the usual
            ``if __name__ == "__main__":`` guard in scripts.

    Raises:
        KeyMismatchError: ``private_key`` does not belong to ``public_key``.
        ValueError: ``workers`` or ``chunk_size`` below 1.
    """

    def __init__(
        self,
        public_key: PublicKey,
        private_key: PrivateKey | None = None,
        *,
        workers: int | None = None,
        window_bits: int | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        randbits: Callable[[int], int] | None = None,
        start_method: str = "forkserver",
    ) -> None:
        if private_key is not None:
            public_key.check_same(private_key.public_key)
        workers = (os.cpu_count() or 1) if workers is None else workers
        if workers < 1 or chunk_size < 1:
            raise ValueError("workers and chunk_size must be >= 1")
        if window_bits is None:
            window_bits = DEFAULT_WINDOW_BITS if private_key is None else KEY_HOLDER_WINDOW_BITS
        if not 1 <= window_bits <= 16:
            raise ValueError("window_bits must be in [1, 16]")
        self.public_key = public_key
        self._private_key = private_key
        self.workers = workers
        self.window_bits = window_bits
        self.chunk_size = chunk_size
        self._randbits = randbits or secrets.randbits
        self._pool: Executor | None = None
        self._start_method = start_method
        self._obfuscators: collections.deque[Mpz] = collections.deque()
        self._pending: list[Future[list[Mpz]]] = []
        self._spec = _batch.EncryptSpec(
            n=public_key.n,
            h_s=public_key.h_s,
            obfuscator_bits=public_key.obfuscator_bits,
            window_bits=window_bits,
            p=private_key.p if private_key else 0,
            q=private_key.q if private_key else 0,
        )

    def __repr__(self) -> str:
        return (
            f"PaillierEngine(fingerprint={self.public_key.fingerprint!r}, "
            f"can_decrypt={self._private_key is not None}, workers={self.workers})"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker processes (their cached tables go with them)."""
        self._pending = []
        self._obfuscators.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> PaillierEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _executor(self) -> Executor:
        if self._pool is None:
            ctx = multiprocessing.get_context(self._start_method)
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._pool

    def _map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]) -> list[Any]:
        if self.workers == 1 or len(tasks) <= 1:
            return [fn(*t) for t in tasks]
        pool = self._executor()
        futures = [pool.submit(fn, *t) for t in tasks]
        return [f.result() for f in futures]

    def _chunk_size_for(self, n: int) -> int:
        # at least two tasks per worker, at most chunk_size elements each, and a task count that
        # is a multiple of the workers with near-equal sizes, so that none idles at the end
        if self.workers == 1:
            return max(1, min(self.chunk_size, n))
        tasks = max(2 * self.workers, -(-n // self.chunk_size))
        tasks = -(-tasks // self.workers) * self.workers
        return max(1, -(-n // tasks))

    # -- encryption ----------------------------------------------------------------------------

    def encrypt(self, values: npt.ArrayLike, frac_bits: int = DEFAULT_FRAC_BITS) -> EncryptedVector:
        """Encode a real vector with the shared exponent ``-frac_bits`` and encrypt it.

        Raises:
            ShapeError: ``values`` is not a one-dimensional real vector.
            EncodingOverflowError: a value is not finite or too large for the key.
        """
        return self.encrypt_encoded(encode_vector(values, frac_bits))

    def encrypt_encoded(self, encoded: EncodedVector) -> EncryptedVector:
        """Encrypt an already encoded vector.

        Raises:
            EncodingOverflowError: an element does not fit the plaintext range.
        """
        if not _bound_ok(encoded.bound_bits, self.public_key):
            raise EncodingOverflowError("an element does not fit the plaintext range")
        n = self.public_key.n
        cts = self._encrypt_ints([v % n for v in encoded.ints])
        return EncryptedVector(self.public_key, tuple(cts), encoded.exponent, encoded.bound_bits)

    def precompute(self, count: int) -> None:
        """Compute ``count`` obfuscators ahead of time, in the workers, for later encryptions.

        A party calls this while it waits for its peer; each stored obfuscator is used for exactly
        one encryption and then discarded. They live only in this process's memory.

        Raises:
            ValueError: ``count`` is negative.
        """
        if count < 0:
            raise ValueError("count must be non-negative")
        spec = self._spec
        exps = [self._randbits(spec.obfuscator_bits) for _ in range(count)]
        size = self._chunk_size_for(count)
        tasks = [(spec, exps[s]) for s in _chunks(count, size)]
        for part in self._map(_batch.obfuscator_chunk, tasks):
            self._obfuscators.extend(part)

    def precompute_async(self, count: int) -> None:
        """Start computing ``count`` obfuscators in the workers and return at once.

        For a party that is about to wait for its peer (the brand after sending residuals): the
        workers fill the stock meanwhile, and the next encryption collects the results. Without
        worker processes (``workers=1``) this computes synchronously, like :meth:`precompute`.

        Raises:
            ValueError: ``count`` is negative.
        """
        if count < 0:
            raise ValueError("count must be non-negative")
        if self.workers == 1:
            self.precompute(count)
            return
        spec = self._spec
        exps = [self._randbits(spec.obfuscator_bits) for _ in range(count)]
        size = self._chunk_size_for(count)
        pool = self._executor()
        for s in _chunks(count, size):
            self._pending.append(pool.submit(_batch.obfuscator_chunk, spec, exps[s]))

    def _collect(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            self._obfuscators.extend(future.result())

    @property
    def precomputed(self) -> int:
        """Obfuscators in stock (waits for any started by :meth:`precompute_async`)."""
        self._collect()
        return len(self._obfuscators)

    def _encrypt_ints(self, plaintexts: list[int]) -> list[Mpz]:
        if self._pending:
            self._collect()
        if self._obfuscators:
            n, nsq = self.public_key.n, self.public_key.nsquare
            stock = self._obfuscators
            take = min(len(plaintexts), len(stock))
            head = [(1 + m * n) % nsq * stock.popleft() % nsq for m in plaintexts[:take]]
            return head + self._encrypt_ints(plaintexts[take:]) if take < len(plaintexts) else head
        if not plaintexts:
            return []
        spec = self._spec
        exps = [self._randbits(spec.obfuscator_bits) for _ in plaintexts]
        size = self._chunk_size_for(len(plaintexts))
        tasks = [(spec, plaintexts[s], exps[s]) for s in _chunks(len(plaintexts), size)]
        out: list[Mpz] = []
        for part in self._map(_batch.encrypt_chunk, tasks):
            out.extend(part)
        return out

    def _fresh_zeros(self, count: int) -> list[Mpz]:
        """Textbook encryptions of zero ``r^n mod n²`` with ``r`` uniform in ``Z*_n``.

        Deliberately not the fixed-base method: these must be uniform among all ``n``-th residues
        whatever ``h_s`` the key holder announced. Costly (one full exponentiation each), so only
        used on the few ciphertexts that go back to the key holder.
        """
        n = self.public_key.n
        rs: list[int] = []
        while len(rs) < count:
            r = self._randbits(n.bit_length() + RERANDOMIZE_EXTRA_BITS) % n
            if gmpy2.gcd(r, n) == 1:
                rs.append(r)
        size = self._chunk_size_for(count)
        out: list[Mpz] = []
        for part in self._map(
            _batch.textbook_zero_chunk, [(n, rs[s]) for s in _chunks(count, size)]
        ):
            out.extend(part)
        return out

    def rerandomize(self, vector: EncryptedVector) -> EncryptedVector:
        """Multiply every ciphertext by a fresh textbook encryption of zero ``r^n``.

        Required before a ciphertext computed from one's own secrets goes back to the key holder:
        the randomness of ``∏ c_i^x_i`` is ``∏ ρ_i^x_i``, a function of the secret ``x`` and of
        obfuscators the key holder chose. Multiplying by ``r^n`` with ``r`` uniform in ``Z*_n``
        (statistically, 128 spare bits) makes the result's randomness a uniform ``n``-th residue,
        independent of ``x``, of the input's randomness and of the announced ``h_s``.

        Raises:
            KeyMismatchError: ``vector`` is under another key.
        """
        self.public_key.check_same(vector.public_key)
        zeros = self._fresh_zeros(len(vector))
        nsq = self.public_key.nsquare
        cts = tuple(c * z % nsq for c, z in zip(vector.ciphertexts, zeros, strict=True))
        return EncryptedVector(self.public_key, cts, vector.exponent, vector.bound_bits)

    # -- decryption ----------------------------------------------------------------------------

    def _require_private(self) -> PrivateKey:
        if self._private_key is None:
            raise KeyMismatchError("this engine holds no private key")
        return self._private_key

    def _decrypt_raw(self, cts: Sequence[Mpz]) -> list[int]:
        key = self._require_private()
        size = self._chunk_size_for(len(cts))
        tasks = [(key.p, key.q, list(cts[s])) for s in _chunks(len(cts), size)]
        out: list[int] = []
        for part in self._map(_batch.decrypt_chunk, tasks):
            out.extend(part)
        return out

    def decrypt_encoded(self, vector: EncryptedVector) -> EncodedVector:
        """Decrypt to signed integers with the vector's exponent.

        Raises:
            KeyMismatchError: no private key, or the vector is under another key.
            EncodingOverflowError: a plaintext lies outside the vector's bound (it wrapped).
        """
        key = self._require_private()
        key.public_key.check_same(vector.public_key)
        n = self.public_key.n
        limit = 1 << vector.bound_bits
        ints: list[int] = []
        for m in self._decrypt_raw(vector.ciphertexts):
            v = m - n if m > n // 2 else m
            if abs(v) >= limit:
                raise EncodingOverflowError("a decrypted value lies outside its bound (overflow)")
            ints.append(v)
        return EncodedVector(tuple(ints), vector.exponent, vector.bound_bits)

    def decrypt(self, vector: EncryptedVector) -> npt.NDArray[np.float64]:
        """Decrypt to float64 values.

        Raises:
            KeyMismatchError: no private key, or the vector is under another key.
            EncodingOverflowError: a plaintext lies outside the vector's bound (it wrapped).
        """
        return self.decrypt_encoded(vector).decode()

    # -- homomorphic linear algebra ------------------------------------------------------------

    def transpose_dot(self, matrix: EncodedMatrix, vector: EncryptedVector) -> EncryptedVector:
        """``X^T·[[r]]``: for each column ``j`` of ``X`` the ciphertext of ``Σ_i x_ij·r_i``.

        The result's exponent is the sum of both exponents; its bound grows by the matrix bound
        and ``log2(rows)``. Computed by the bucket method over row chunks in the workers.

        Raises:
            KeyMismatchError: not under this engine's key.
            ShapeError: the matrix has another number of rows than the vector has elements.
            EncodingOverflowError: the sums could exceed the plaintext range.
        """
        self.public_key.check_same(vector.public_key)
        ints = np.asarray(matrix.ints)
        if ints.ndim != 2 or ints.shape[0] != len(vector):
            raise ShapeError(
                f"matrix has {ints.shape[0] if ints.ndim == 2 else '?'} rows, "
                f"vector has {len(vector)} elements"
            )
        rows, cols = ints.shape
        bound = vector.bound_bits + matrix.bound_bits + max(rows, 1).bit_length()
        if not _bound_ok(bound, self.public_key):
            raise EncodingOverflowError("X^T·r could exceed the plaintext range")
        nsq = self.public_key.nsquare
        # one task per worker: the bucket aggregation costs 2^(w+1) per task and column
        size = max(1, -(-rows // self.workers))
        shift_bits = max(matrix.bound_bits, 1)
        tasks = [
            (nsq, list(vector.ciphertexts[s]), ints[s], shift_bits) for s in _chunks(rows, size)
        ]
        acc = [gmpy2.mpz(1)] * cols
        total = gmpy2.mpz(1)
        for part, part_total in self._map(_batch.transpose_dot_chunk, tasks):
            acc = [a * b % nsq for a, b in zip(acc, part, strict=True)]
            total = total * part_total % nsq
        correction = gmpy2.powmod(gmpy2.invert(total, nsq), 1 << shift_bits, nsq)
        cts = tuple(a * correction % nsq for a in acc)
        return EncryptedVector(self.public_key, cts, vector.exponent + matrix.exponent, bound)

    # -- packing -------------------------------------------------------------------------------

    def slots(self, layout: SlotLayout) -> int:
        """Values per ciphertext under ``layout`` for this key."""
        return layout.slots_for(self.public_key.n.bit_length())

    def encrypt_packed(self, encoded: EncodedVector, layout: SlotLayout) -> PackedCiphertexts:
        """Pack ``slots(layout)`` values per plaintext, then encrypt.

        Raises:
            PackingOverflowError: a value does not fit the layout's ``value_bits``.
        """
        k = self.slots(layout)
        vals = list(encoded.ints)
        plains = [layout.pack(vals[i : i + k]) for i in range(0, len(vals), k)]
        cts = self._encrypt_ints(plains)
        return PackedCiphertexts(
            self.public_key, tuple(cts), layout, len(vals), encoded.exponent, terms=1
        )

    def pack(self, vector: EncryptedVector, layout: SlotLayout) -> PackedCiphertexts:
        """Pack an encrypted vector homomorphically (Horner's rule), then re-randomize.

        Lets a peer return ``d`` results in ``⌈d/slots⌉`` ciphertexts, so the key holder decrypts
        fewer and the message shrinks.

        Raises:
            KeyMismatchError: not under this engine's key.
            PackingOverflowError: the vector's bound exceeds the layout's ``value_bits``.
        """
        self.public_key.check_same(vector.public_key)
        if vector.bound_bits > layout.value_bits - 1:
            raise PackingOverflowError(
                f"values of up to {vector.bound_bits} bits do not fit {layout.value_bits}-bit slots"
            )
        k = self.slots(layout)
        n, nsq = self.public_key.n, self.public_key.nsquare
        offset_ct = (1 + layout.offset * n) % nsq
        shift = 1 << layout.slot_bits
        packed: list[Mpz] = []
        for start in range(0, len(vector), k):
            group = vector.ciphertexts[start : start + k]
            acc = gmpy2.mpz(1)
            for c in reversed(group):
                acc = gmpy2.powmod(acc, shift, nsq) * c % nsq * offset_ct % nsq
            packed.append(acc)
        zeros = self._fresh_zeros(len(packed))
        cts = tuple(c * z % nsq for c, z in zip(packed, zeros, strict=True))
        return PackedCiphertexts(self.public_key, cts, layout, len(vector), vector.exponent)

    def decrypt_packed(self, packed: PackedCiphertexts) -> EncodedVector:
        """Decrypt and unpack.

        Raises:
            KeyMismatchError: no private key, or another key.
            PackingOverflowError: a slot overflowed into its guard bit.
        """
        key = self._require_private()
        key.public_key.check_same(packed.public_key)
        k = self.slots(packed.layout)
        values: list[int] = []
        remaining = packed.count
        for m in self._decrypt_raw(packed.ciphertexts):
            take = min(k, remaining)
            values.extend(packed.layout.unpack(m, take, packed.terms))
            remaining -= take
        bound = max((abs(v).bit_length() for v in values), default=0)
        return EncodedVector(tuple(values), packed.exponent, bound)
