"""Batch steps of the PSI: pure functions over one chunk, and engines that map them.

Every expensive step (hash-to-curve plus masking of a party's own values, masking of the peer's
points) is a pure function of bytes in, bytes out, so that a process pool here, or a cluster
engine later, can map it over chunks. Secret scalars are passed to workers as arguments and
never written anywhere.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from typing import Protocol

import numpy as np

from pec.crypto.masking import POINT_BYTES, hash_values, mask_points

__all__ = [
    "BatchEngine",
    "InlineEngine",
    "PoolEngine",
    "hash_and_mask",
    "mask_and_truncate",
    "start_method",
]


def hash_and_mask(
    scalar: bytes, salt: bytes, tag: bytes, values: Sequence[bytes], curve_only: bool = True
) -> bytes:
    """Hash each value to a point and mask it with ``scalar``; concatenated 32-byte points."""
    points = hash_values(values, salt, tag, curve_only=curve_only)
    return mask_points(scalar, points, validate=False)


def mask_and_truncate(scalar: bytes, points: bytes, width: int, curve_only: bool = True) -> bytes:
    """Validate and mask received points, keeping the first ``width`` bytes of each result.

    Raises:
        pec.crypto.InvalidPoint: for the first invalid point of the chunk.
    """
    masked = mask_points(scalar, points, validate=True, curve_only=curve_only)
    if width == POINT_BYTES:
        return masked
    return np.frombuffer(masked, dtype=np.uint8).reshape(-1, POINT_BYTES)[:, :width].tobytes()


def start_method() -> str:
    """How to start worker or party processes from this process: ``fork`` or ``spawn``.

    Fork is cheapest (the child inherits this process's imported modules instead of importing
    them again) but only safe while this process runs a single thread; otherwise spawn.
    """
    if "fork" in get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _warm_up() -> None:
    """Runs once per worker at start: the import of this module is the work."""


class BatchEngine(Protocol):
    """Maps the batch steps over a chunk, possibly in parallel. Order is preserved."""

    def hash_and_mask(
        self,
        scalar: bytes,
        salt: bytes,
        tag: bytes,
        values: Sequence[bytes],
        curve_only: bool = True,
    ) -> bytes:
        """See :func:`hash_and_mask`."""
        ...

    def mask_and_truncate(
        self, scalar: bytes, points: bytes, width: int, curve_only: bool = True
    ) -> bytes:
        """See :func:`mask_and_truncate`."""
        ...

    def close(self) -> None:
        """Release workers."""
        ...


class InlineEngine:
    """Runs every step in the calling process (small inputs, tests)."""

    def hash_and_mask(
        self,
        scalar: bytes,
        salt: bytes,
        tag: bytes,
        values: Sequence[bytes],
        curve_only: bool = True,
    ) -> bytes:
        """See :func:`hash_and_mask`."""
        return hash_and_mask(scalar, salt, tag, values, curve_only)

    def mask_and_truncate(
        self, scalar: bytes, points: bytes, width: int, curve_only: bool = True
    ) -> bytes:
        """See :func:`mask_and_truncate`."""
        return mask_and_truncate(scalar, points, width, curve_only)

    def close(self) -> None:
        """Nothing to release."""


class PoolEngine:
    """Splits each chunk across a pool of worker processes (one per core by default)."""

    def __init__(self, workers: int = 0, *, min_split: int = 2_048) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._min_split = min_split
        method = start_method()
        self.start_method = method
        self._pool: Executor = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=get_context(method)
        )
        # start every worker now, so their start-up overlaps with the caller reading its data
        self._warm = [self._pool.submit(_warm_up) for _ in range(self.workers)]

    def _parts(self, n: int) -> list[tuple[int, int]]:
        pieces = max(1, min(self.workers, n // self._min_split))
        step = -(-n // pieces)
        return [(i, min(n, i + step)) for i in range(0, n, step)]

    def _map(self, fn: Callable[..., bytes], jobs: list[tuple[object, ...]]) -> bytes:
        futures = [self._pool.submit(fn, *args) for args in jobs]
        return b"".join(f.result() for f in futures)

    def hash_and_mask(
        self,
        scalar: bytes,
        salt: bytes,
        tag: bytes,
        values: Sequence[bytes],
        curve_only: bool = True,
    ) -> bytes:
        """See :func:`hash_and_mask`."""
        parts = self._parts(len(values))
        return self._map(
            hash_and_mask, [(scalar, salt, tag, values[a:b], curve_only) for a, b in parts]
        )

    def mask_and_truncate(
        self, scalar: bytes, points: bytes, width: int, curve_only: bool = True
    ) -> bytes:
        """See :func:`mask_and_truncate`."""
        parts = self._parts(len(points) // POINT_BYTES)
        return self._map(
            mask_and_truncate,
            [
                (scalar, points[a * POINT_BYTES : b * POINT_BYTES], width, curve_only)
                for a, b in parts
            ],
        )

    def close(self) -> None:
        """Stop the worker processes."""
        self._pool.shutdown(wait=True, cancel_futures=True)
