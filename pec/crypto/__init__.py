"""Crypto building blocks shared by the protocols: commutative masking (X25519)."""

from __future__ import annotations

from pec.crypto.masking import (
    GROUP_ORDER,
    POINT_BYTES,
    InvalidPoint,
    MaskingError,
    MaskingKey,
    hash_to_u,
    hash_values,
    is_valid_point,
    mask_points,
)

__all__ = [
    "GROUP_ORDER",
    "POINT_BYTES",
    "InvalidPoint",
    "MaskingError",
    "MaskingKey",
    "hash_to_u",
    "hash_values",
    "is_valid_point",
    "mask_points",
]
