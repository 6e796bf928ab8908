"""Packing several signed integers into one Paillier plaintext.

Slot ``s`` of a packed plaintext occupies bits ``[s·W, (s+1)·W)``. A signed value ``v`` with
``-2^(b-1) <= v < 2^(b-1)`` is stored as ``v + 2^(b-1)``, a number in ``[0, 2^b)``. A homomorphic
sum of ``k`` packed ciphertexts holds in each slot a number below ``k·2^b``; the slot width

    W = b + ⌈log2(max_terms)⌉ + 1

leaves room for ``max_terms`` terms plus one guard bit that must stay clear. The engine counts the
terms of every packed ciphertext and refuses a sum with more than ``max_terms`` (before computing),
and at unpacking a set guard bit (a slot that ran over, e.g. through out-of-range inputs injected by
a misbehaving peer) raises :class:`PackingOverflowError` instead of returning wrapped values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pec.paillier.errors import PackingOverflowError, ShapeError


@dataclass(frozen=True)
class SlotLayout:
    """How signed ``value_bits``-bit integers are packed, with headroom for ``max_terms`` sums."""

    value_bits: int
    max_terms: int = 1

    def __post_init__(self) -> None:
        if self.value_bits < 2:
            raise ValueError("value_bits must be >= 2 (one of them is the sign)")
        if self.max_terms < 1:
            raise ValueError("max_terms must be >= 1")

    @property
    def slot_bits(self) -> int:
        """Width ``W`` of one slot, headroom and guard bit included."""
        return self.value_bits + (self.max_terms - 1).bit_length() + 1

    @property
    def offset(self) -> int:
        """The bias added to each signed value, ``2^(value_bits-1)``."""
        return 1 << (self.value_bits - 1)

    def slots_for(self, modulus_bits: int) -> int:
        """How many slots fit below a modulus of ``modulus_bits`` bits (one bit spare).

        Raises:
            PackingOverflowError: not even one slot fits.
        """
        slots = (modulus_bits - 1) // self.slot_bits
        if slots < 1:
            raise PackingOverflowError("a slot is wider than the plaintext space")
        return slots

    def pack(self, values: Sequence[int]) -> int:
        """Pack signed integers, slot 0 in the lowest bits.

        Raises:
            PackingOverflowError: a value is outside ``[-2^(b-1), 2^(b-1))``.
        """
        w = self.slot_bits
        off = self.offset
        packed = 0
        for v in reversed(values):
            if not -off <= v < off:
                raise PackingOverflowError(f"a value does not fit in {self.value_bits} signed bits")
            packed = (packed << w) | (v + off)
        return packed

    def unpack(self, packed: int, count: int, terms: int = 1) -> list[int]:
        """Recover ``count`` signed values from a plaintext that is a sum of ``terms`` packings.

        Raises:
            PackingOverflowError: ``terms`` exceeds ``max_terms``, a slot's guard bit is set, or
                bits are set above the last slot.
            ShapeError: ``count`` is negative.
        """
        if count < 0:
            raise ShapeError("count must be non-negative")
        if not 1 <= terms <= self.max_terms:
            raise PackingOverflowError(f"{terms} terms exceed the layout's headroom")
        w = self.slot_bits
        mask = (1 << w) - 1
        limit = 1 << (w - 1)
        bias = terms * self.offset
        out: list[int] = []
        rest = packed
        for _ in range(count):
            slot = rest & mask
            if slot >= limit:
                raise PackingOverflowError("a packed slot overflowed into its guard bit")
            out.append(slot - bias)
            rest >>= w
        if rest:
            raise PackingOverflowError("bits set beyond the last packed slot")
        return out
