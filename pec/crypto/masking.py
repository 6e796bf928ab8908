"""Commutative masking on Curve25519 (X25519), the building block of ECDH-PSI.

An identifier ``v`` is hashed to a Curve25519 u-coordinate ``H(v)`` and masked with a secret
scalar: ``mask_a(H(v)) = u([a]·H(v))``. Masking commutes,
``mask_a(mask_b(P)) == mask_b(mask_a(P))``, so two parties who each mask both sets once can
compare doubly masked values without ever seeing each other's identifiers. Scalar
multiplication is X25519 from ``cryptography`` (OpenSSL).

Choices, and why:

* ``hash_to_u`` hashes with keyed BLAKE2b (the per-run salt is the key, the purpose is the
  personalisation string, the key slot is a length-prefixed tag). With ``curve_only`` it retries
  with a counter until the u-coordinate lies on Curve25519 itself rather than on its quadratic
  twist: points on the curve let a party invert its own mask (needed to unblind in labeled PSI)
  and let the receiver check that a point is on the curve. Without it (plain ECDH-PSI) a u on
  the twist is accepted: X25519 is twist-secure (the twist's order is 4 times a 253-bit prime),
  and skipping the Legendre-symbol test saves about a fifth of the per-value cost. Either way a
  received value that is non-canonical (>= p), of small order, or the wrong length is rejected
  with :class:`InvalidPoint`.
* Scalars are X25519-clamped (multiple of 8, bit 254 set), so every masked point lies in the
  prime-order subgroup of order ``L`` (about 2^252): the cofactor never leaks.
* :meth:`MaskingKey.generate` can insist that the key has an inverse that is itself a clamped
  scalar, so that ``unmask(mask(P))`` returns the prime-order component of ``P``.

This module never logs or formats key material; ``repr`` of a key shows only a fingerprint.

Dangerous primitives (``raw_*``) are marked: they skip point validation and exist for the batch
workers, which validate once per chunk.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from pec.errors import PecError

__all__ = [
    "GROUP_ORDER",
    "POINT_BYTES",
    "InvalidPoint",
    "MaskingError",
    "MaskingKey",
    "first_invalid_point",
    "hash_to_u",
    "hash_values",
    "is_valid_point",
    "mask_points",
]

FIELD_PRIME = 2**255 - 19
#: Order of the prime-order subgroup of Curve25519 (RFC 7748, section 4.1).
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
POINT_BYTES = 32
_A = 486662
_U_MASK = (1 << 255) - 1
_HASH_PERSON = b"pec/h2u/v1"
_COUNTERS = tuple(bytes([c]) for c in range(256))
# u-coordinates of the points of small order on Curve25519 and its twist, plus the two
# non-canonical encodings of 0 and 1 that an honest party never sends.
_SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        FIELD_PRIME - 1,
        FIELD_PRIME,
        FIELD_PRIME + 1,
    }
)


_U64 = (1 << 64) - 1
# The same refusals as 64-bit limbs (little-endian), for checking a whole chunk at once.
_SMALL_ORDER_LIMBS = np.array(
    [[(u >> (64 * i)) & _U64 for i in range(4)] for u in sorted(_SMALL_ORDER_U)], dtype="<u8"
)


class MaskingError(PecError):
    """Root of the errors of commutative masking."""


class InvalidPoint(MaskingError, ValueError):
    """A received value is not a valid masked point.

    Wrong length, non-canonical, off the curve or of small order. The message names the
    position, never the value.
    """


@cache
def _legendre() -> Callable[[int], int]:
    """The Legendre symbol mod p, through GMP.

    gmpy2 is imported on first use (about 18 ms): only the curve test needs it, and a plain PSI
    (no labeled mode) never runs that test.
    """
    import gmpy2

    jacobi, p = gmpy2.jacobi, gmpy2.mpz(FIELD_PRIME)
    return lambda x: int(jacobi(x, p))


def _on_curve(u: int) -> bool:
    # the Legendre symbol of u^3 + A u^2 + u: 1 on the curve, -1 on the twist, 0 if it is 0;
    # GMP reduces the unreduced product itself, faster than a Python-level ``% p``
    return _legendre()(u * (u * (u + _A) + 1)) == 1


def is_valid_point(encoded: bytes, *, curve_only: bool = True) -> bool:
    """Whether ``encoded`` is a canonical u-coordinate of a point of large order.

    With ``curve_only`` the point must lie on Curve25519 itself, not on its twist.
    """
    if len(encoded) != POINT_BYTES:
        return False
    u = int.from_bytes(encoded, "little")
    if u > _U_MASK or u >= FIELD_PRIME or u in _SMALL_ORDER_U:
        return False
    return not curve_only or _on_curve(u)


def _refused(points: bytes | bytearray) -> Any:
    """Per point of a buffer (a multiple of 32 bytes): non-canonical, high bit or small order.

    The checks of :func:`is_valid_point` except the curve test, on 64-bit limbs with numpy.
    """
    limbs = np.frombuffer(points, dtype="<u8").reshape(-1, 4)
    refused = limbs[:, 3] > 0x7FFF_FFFF_FFFF_FFFF  # above 2^255 - 1
    refused |= (  # p = 2^255 - 19 <= u < 2^255
        (limbs[:, 3] == 0x7FFF_FFFF_FFFF_FFFF)
        & (limbs[:, 2] == _U64)
        & (limbs[:, 1] == _U64)
        & (limbs[:, 0] >= _U64 - 18)
    )
    for small in _SMALL_ORDER_LIMBS:
        refused |= (limbs == small).all(axis=1)
    return refused


def first_invalid_point(points: bytes, *, curve_only: bool = True) -> int | None:
    """The index of the first 32-byte point of ``points`` that :func:`is_valid_point` refuses.

    ``None`` when every point is valid. ``len(points)`` must be a multiple of 32.
    """
    refused = _refused(points)
    first = int(refused.argmax()) if refused.any() else len(refused)
    if curve_only:
        from_bytes = int.from_bytes
        for index in range(first):
            if not _on_curve(from_bytes(points[index * 32 : index * 32 + 32], "little")):
                return index
    return first if first < len(refused) else None


def _keyed_hasher(salt: bytes, tag: bytes) -> Any:
    """BLAKE2b keyed with the salt, personalised, with the length-prefixed tag absorbed."""
    hasher = hashlib.blake2b(digest_size=32, key=salt, person=_HASH_PERSON)
    hasher.update(len(tag).to_bytes(2, "big") + tag)
    return hasher


def _hash_one(base: Any, value: bytes, curve_only: bool) -> bytes:
    for counter in range(256):
        hasher = base.copy()  # cheaper than keying a new hasher for every value
        hasher.update(_COUNTERS[counter] + value)
        u = int.from_bytes(hasher.digest(), "little") & _U_MASK
        if u < FIELD_PRIME and u not in _SMALL_ORDER_U and (not curve_only or _on_curve(u)):
            return u.to_bytes(POINT_BYTES, "little")
    # Each try lands on the curve with probability ~1/2; 256 misses do not happen (2^-256).
    raise MaskingError("hash_to_u found no curve point")  # pragma: no cover


def hash_to_u(value: bytes, salt: bytes, tag: bytes, *, curve_only: bool = True) -> bytes:
    """Hash ``value`` to a canonical u-coordinate of large order.

    ``salt`` is the per-run salt (up to 64 bytes, used as the BLAKE2b key) and ``tag`` separates
    domains (protocol, key slot, kind). The input of try ``c`` (0..255) is
    ``len(tag) as 2 bytes || tag || c as 1 byte || value``. With ``curve_only`` the point lies on
    Curve25519 itself; otherwise it may lie on the twist.
    """
    return _hash_one(_keyed_hasher(salt, tag), value, curve_only)


def hash_values(
    values: Sequence[bytes], salt: bytes, tag: bytes, *, curve_only: bool = True
) -> bytes:
    """Hash each value to a point (as :func:`hash_to_u`); returns the points concatenated."""
    base = _keyed_hasher(salt, tag)
    if curve_only:
        return b"".join(_hash_one(base, v, curve_only) for v in values)
    # Without the curve test the first try almost always stands: hash every value once, clear
    # the top bits together, and redo (with the counter) only the values whose first u is
    # refused, which happens with probability about 2^-250 per value.
    copy = base.copy
    first = _COUNTERS[0]
    out = bytearray()
    for value in values:
        hasher = copy()
        hasher.update(first + value)
        out += hasher.digest()
    if out:
        np.frombuffer(out, dtype=np.uint8).reshape(-1, POINT_BYTES)[:, 31] &= 0x7F
        for index in np.flatnonzero(_refused(out)).tolist():
            out[index * 32 : index * 32 + 32] = _hash_one(base, values[index], False)
    return bytes(out)


def _clamp(scalar: bytes) -> int:
    k = bytearray(scalar)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return int.from_bytes(bytes(k), "little")


def _clamped_inverse(k: int) -> int | None:
    """The clamped scalar ``s`` with ``s·k = 1 (mod L)``, if one exists, else None."""
    s0 = pow(k, -1, GROUP_ORDER)
    # s = s0 + t·L must be a multiple of 8 and lie in [2^254, 2^255).
    t_residue = (-s0 * pow(GROUP_ORDER, -1, 8)) % 8
    t_low = -((s0 - 2**254) // GROUP_ORDER)  # ceil((2^254 - s0) / L)
    t_high = (2**255 - 1 - s0) // GROUP_ORDER
    t = t_low + ((t_residue - t_low) % 8)
    if t > t_high:
        return None
    return s0 + t * GROUP_ORDER


@dataclass(frozen=True, repr=False)
class MaskingKey:
    """A secret X25519 scalar for one protocol run. Never reuse across runs; never log."""

    _scalar: bytes = field()

    def __post_init__(self) -> None:
        if len(self._scalar) != 32:
            raise ValueError("a masking key is 32 bytes")
        if _clamp(self._scalar).to_bytes(32, "little") != self._scalar:
            raise ValueError("a masking key must be a clamped X25519 scalar")

    @classmethod
    def generate(
        cls, *, invertible: bool = False, randbytes: Callable[[int], bytes] = os.urandom
    ) -> MaskingKey:
        """A fresh random key; with ``invertible``, one whose inverse is also a clamped scalar.

        ``randbytes`` is injectable for deterministic tests.
        """
        while True:
            k = _clamp(randbytes(32))
            if not invertible or _clamped_inverse(k) is not None:
                return cls(k.to_bytes(32, "little"))

    def inverse(self) -> MaskingKey:
        """The key that undoes this one on the prime-order subgroup.

        Raises:
            MaskingError: if this key was not generated with ``invertible=True``.
        """
        inv = _clamped_inverse(int.from_bytes(self._scalar, "little"))
        if inv is None:
            raise MaskingError("this masking key has no clamped inverse")
        return MaskingKey(inv.to_bytes(32, "little"))

    def raw_scalar(self) -> bytes:
        """The secret scalar, for handing to a batch worker process. Never log or send it."""
        return self._scalar

    def fingerprint(self) -> str:
        """A short public fingerprint of the key (not of the secret): safe to log."""
        pub = X25519PrivateKey.from_private_bytes(self._scalar).public_key().public_bytes_raw()
        return hashlib.blake2b(pub, digest_size=8).hexdigest()

    def __repr__(self) -> str:
        return f"MaskingKey(fingerprint={self.fingerprint()})"

    def mask(self, point: bytes) -> bytes:
        """Mask one point (validated first)."""
        return mask_points(self._scalar, point, validate=True)

    def mask_many(self, points: bytes, *, validate: bool = True) -> bytes:
        """Mask concatenated points (32 bytes each); see :func:`mask_points`."""
        return mask_points(self._scalar, points, validate=validate)


def _point_loader() -> Callable[[bytes], X25519PublicKey]:
    """``X25519PublicKey.from_public_bytes``, minus the check it repeats on every call.

    The public classmethod first checks that this OpenSSL supports X25519 (a function-level
    import and a backend call: 1.1 of its 2.1 µs on our VM), then calls the function it wraps.
    A PSI loads two points per value, so this checks once, through the public classmethod, and
    hands out the wrapped function, if it is there and behaves the same on a known point;
    otherwise (another release of ``cryptography``) the public classmethod itself.
    """
    public = X25519PublicKey.from_public_bytes
    probe = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    point = probe.public_key().public_bytes_raw()
    try:
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl

        wrapped: Callable[[bytes], X25519PublicKey] = rust_openssl.x25519.from_public_bytes
        loaded = wrapped(point)
        if isinstance(loaded, X25519PublicKey) and probe.exchange(loaded) == probe.exchange(
            public(point)
        ):
            return wrapped
    except Exception:  # any surprise means: use the public classmethod
        pass
    return public


_load_point = _point_loader()


def mask_points(
    scalar: bytes, points: bytes, *, validate: bool = True, curve_only: bool = True
) -> bytes:
    """Multiply each 32-byte point in ``points`` by ``scalar``; returns the results concatenated.

    With ``validate`` every input point is checked first (see :func:`is_valid_point`); a result
    of small order is always rejected.

    Raises:
        InvalidPoint: naming the index of the first bad point.
    """
    if len(points) % POINT_BYTES:
        raise InvalidPoint(f"point buffer of {len(points)} bytes is not a multiple of 32")
    if validate:
        bad = first_invalid_point(points, curve_only=curve_only)
        if bad is not None:
            raise InvalidPoint(f"point {bad} of the chunk is not a valid curve point")
    exchange = X25519PrivateKey.from_private_bytes(scalar).exchange
    load = _load_point
    try:
        return b"".join([exchange(load(points[i : i + 32])) for i in range(0, len(points), 32)])
    except ValueError:  # OpenSSL refuses an all-zero result: small order. Find which point.
        for index in range(len(points) // POINT_BYTES):
            try:
                exchange(load(points[index * 32 : index * 32 + 32]))
            except ValueError as exc:
                raise InvalidPoint(f"point {index} of the chunk has small order") from exc
        raise


def split_points(points: bytes) -> Sequence[bytes]:
    """Split concatenated points into a list of 32-byte values."""
    return [points[i : i + POINT_BYTES] for i in range(0, len(points), POINT_BYTES)]
