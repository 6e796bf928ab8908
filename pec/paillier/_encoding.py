"""Fixed-point integer encoding with one shared exponent per vector or matrix.

A real vector ``v`` becomes integers ``round(v · 2^f)`` and the exponent ``-f``; the whole vector
shares it, so homomorphic sums need no per-element rescaling. Each encoded object also carries a
bound ``B`` with ``|value| < 2^B`` for every element: operations propagate the bound, and the
engine refuses (raises) before a result could leave the plaintext range instead of wrapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pec.paillier.errors import EncodingOverflowError, ShapeError

DEFAULT_FRAC_BITS = 24
"""Fractional bits for model quantities (residuals, scores): resolution 6e-8."""

DEFAULT_FEATURE_BITS = 12
"""Magnitude bits for a plain feature matrix in ``X^T·[[r]]``: 1/4096 of the largest |x|.

The cost of the homomorphic product grows with these bits (one bucket pass per window)."""


@dataclass(frozen=True)
class EncodedVector:
    """Integers sharing one base-2 exponent: element ``i`` stands for ``ints[i] · 2^exponent``."""

    ints: tuple[int, ...]
    exponent: int
    bound_bits: int

    def __len__(self) -> int:
        return len(self.ints)

    def decode(self) -> npt.NDArray[np.float64]:
        """The real values as float64."""
        return np.array([math.ldexp(v, self.exponent) for v in self.ints], dtype=np.float64)


@dataclass(frozen=True)
class EncodedMatrix:
    """A plain integer matrix (rows × columns) with one shared base-2 exponent."""

    ints: npt.NDArray[np.int64]
    exponent: int
    bound_bits: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)``."""
        r, c = self.ints.shape
        return int(r), int(c)


def _finite_array(values: npt.ArrayLike, ndim: int) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ShapeError("values must be real numbers") from exc
    if arr.ndim != ndim:
        raise ShapeError(f"expected a {ndim}-dimensional array, got {arr.ndim} dimensions")
    if not np.all(np.isfinite(arr)):
        raise EncodingOverflowError("values must be finite")
    return arr


def encode_vector(
    values: npt.ArrayLike, frac_bits: int = DEFAULT_FRAC_BITS, *, max_bits: int = 62
) -> EncodedVector:
    """Encode a real vector with the shared exponent ``-frac_bits``.

    Raises:
        ShapeError: ``values`` is not one-dimensional real data.
        EncodingOverflowError: a value is not finite or needs more than ``max_bits`` bits.
    """
    arr = _finite_array(values, 1)
    scaled = np.rint(np.ldexp(arr, frac_bits))
    if arr.size and float(np.max(np.abs(scaled))) >= math.ldexp(1.0, max_bits):
        raise EncodingOverflowError(f"a value needs more than {max_bits} bits at this precision")
    ints = tuple(int(v) for v in scaled)
    bound = max((abs(v).bit_length() for v in ints), default=0)
    return EncodedVector(ints=ints, exponent=-frac_bits, bound_bits=bound)


def encode_int_vector(ints: list[int] | tuple[int, ...], exponent: int = 0) -> EncodedVector:
    """Wrap integers that are already fixed-point encoded.

    Raises:
        ShapeError: an element is not an integer.
    """
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in ints):
        raise ShapeError("elements must be integers")
    vals = tuple(int(v) for v in ints)
    bound = max((abs(v).bit_length() for v in vals), default=0)
    return EncodedVector(ints=vals, exponent=exponent, bound_bits=bound)


def encode_matrix(
    matrix: npt.ArrayLike, magnitude_bits: int = DEFAULT_FEATURE_BITS
) -> EncodedMatrix:
    """Encode a real matrix with the finest shared exponent that keeps ``|x| < 2^magnitude_bits``.

    Raises:
        ShapeError: ``matrix`` is not two-dimensional real data.
        EncodingOverflowError: a value is not finite.
        ValueError: ``magnitude_bits`` is outside ``[1, 62]``.
    """
    if not 1 <= magnitude_bits <= 62:
        raise ValueError("magnitude_bits must be in [1, 62]")
    arr = _finite_array(matrix, 2)
    top = float(np.max(np.abs(arr))) if arr.size else 0.0
    if top == 0.0:
        frac = 0
    else:
        # largest f with round(top · 2^f) < 2^magnitude_bits
        frac = magnitude_bits - math.frexp(top)[1] - 1
        while abs(round(math.ldexp(top, frac + 1))) < (1 << magnitude_bits):
            frac += 1
        while abs(round(math.ldexp(top, frac))) >= (1 << magnitude_bits):
            frac -= 1
    ints = np.rint(np.ldexp(arr, frac)).astype(np.int64)
    bound = int(np.max(np.abs(ints))).bit_length() if arr.size else 0
    return EncodedMatrix(ints=ints, exponent=-frac, bound_bits=bound)
