"""The Paillier engine: additively homomorphic encryption for vertical federated learning.

Built on ``phe`` (key generation, CRT decryption) and ``gmpy2``, adding what a federated job needs
at scale: fixed-base precomputed obfuscators, fixed-point vectors with one shared exponent, several
values per ciphertext (packing with overflow headroom), process-parallel batches and ``X^T·[[r]]``.

Start with :class:`KeyPair` (one per job, never stored, never logged) and :class:`PaillierEngine`.
The raw arithmetic lives in :mod:`pec.paillier.hazmat`; you probably do not want it.

Errors are drawn in :mod:`pec.paillier.errors`.
"""

from __future__ import annotations

from pec.paillier._encoding import (
    DEFAULT_FEATURE_BITS,
    DEFAULT_FRAC_BITS,
    EncodedMatrix,
    EncodedVector,
    encode_int_vector,
    encode_matrix,
    encode_vector,
)
from pec.paillier._engine import (
    DEFAULT_WINDOW_BITS,
    KEY_HOLDER_WINDOW_BITS,
    EncryptedVector,
    PackedCiphertexts,
    PaillierEngine,
)
from pec.paillier._keys import DEFAULT_KEY_BITS, KeyPair, PrivateKey, PublicKey
from pec.paillier._packing import SlotLayout
from pec.paillier.errors import (
    EncodingOverflowError,
    ExponentMismatchError,
    KeyMismatchError,
    PackingOverflowError,
    PaillierError,
    ShapeError,
)

__all__ = [
    "DEFAULT_FEATURE_BITS",
    "DEFAULT_FRAC_BITS",
    "DEFAULT_KEY_BITS",
    "DEFAULT_WINDOW_BITS",
    "KEY_HOLDER_WINDOW_BITS",
    "EncodedMatrix",
    "EncodedVector",
    "EncodingOverflowError",
    "EncryptedVector",
    "ExponentMismatchError",
    "KeyMismatchError",
    "KeyPair",
    "PackedCiphertexts",
    "PackingOverflowError",
    "PaillierEngine",
    "PaillierError",
    "PrivateKey",
    "PublicKey",
    "ShapeError",
    "SlotLayout",
    "encode_int_vector",
    "encode_matrix",
    "encode_vector",
]
