"""Errors of the Paillier engine.

Messages name the operation and the sizes involved, never a key, a plaintext or a ciphertext.

    PecError
    └── PaillierError
        ├── KeyMismatchError (ValueError)         operands or keys of different key pairs
        ├── ExponentMismatchError (ValueError)    fixed-point exponents differ
        ├── ShapeError (ValueError)               lengths or dimensions do not fit
        ├── EncodingOverflowError (OverflowError) a value leaves the plaintext range
        └── PackingOverflowError (OverflowError)  a packed slot spills into its neighbour
"""

from __future__ import annotations

from pec.errors import PecError


class PaillierError(PecError):
    """Root of the Paillier engine's errors."""


class KeyMismatchError(PaillierError, ValueError):
    """Ciphertexts, or a ciphertext and a key, belong to different key pairs."""


class ExponentMismatchError(PaillierError, ValueError):
    """Two fixed-point vectors combined in one operation have different exponents."""


class ShapeError(PaillierError, ValueError):
    """Vector lengths or matrix dimensions do not match the operation."""


class EncodingOverflowError(PaillierError, OverflowError):
    """A value, or the result of an operation, does not fit the encoding's range.

    Raised before encryption when an input is too large, and at decryption when a result lies
    outside the range the operations could have produced (a wrapped plaintext).
    """


class PackingOverflowError(PaillierError, OverflowError):
    """A packed slot would overflow, or has overflowed, into its neighbour."""
