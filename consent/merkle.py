"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and their verification.

Pure functions over hashes: no I/O, no storage. A ledger supplies the hashes of complete
("perfect") subtrees through a :data:`PerfectSubtree` callback, so proofs cost O(log n) look-ups
and never read the whole log.

Definitions (RFC 9162 §2.1.1): ``MTH({}) = SHA-256()``; a leaf hashes as ``SHA-256(0x00 || d)``;
an inner node as ``SHA-256(0x01 || left || right)``; a tree of ``n > 1`` leaves splits at the
largest power of two ``k < n``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: ``perfect(level, index)`` returns the hash of the complete subtree of ``2**level`` leaves that
#: starts at leaf ``index * 2**level``; level 0 is a leaf hash.
PerfectSubtree = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """Hash one leaf: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash an inner node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """Return the largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    if n < 2:
        raise ValueError("a split needs at least two leaves")
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the tree head of a list of leaf hashes (the RFC definition, iteratively)."""
    frontier = Frontier()
    for h in leaf_hashes:
        frontier.append(h)
    return frontier.root()


def range_hash(start: int, end: int, perfect: PerfectSubtree) -> bytes:
    """Return ``MTH(D[start:end])`` for a range that occurs in the RFC decomposition.

    Such ranges start at a multiple of the largest power of two not above their length, so they
    decompose into O(log n) perfect subtrees.
    """
    n = end - start
    if n <= 0:
        raise ValueError("empty range")
    if n & (n - 1) == 0 and start % n == 0:
        return perfect(n.bit_length() - 1, start // n)
    k = split_point(n)
    return node_hash(range_hash(start, start + k, perfect), range_hash(start + k, end, perfect))


def inclusion_path(index: int, size: int, perfect: PerfectSubtree) -> list[bytes]:
    """Return the audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 §2.1.3.1).

    Raises:
        ValueError: ``index`` is not below ``size``.
    """
    if not 0 <= index < size:
        raise ValueError("leaf index outside the tree")
    path: list[bytes] = []
    start, end = 0, size
    # Walk down from the root, collecting the sibling of the side that holds the leaf; the RFC
    # lists siblings bottom-up, so reverse at the end.
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(range_hash(start + k, end, perfect))
            end = start + k
        else:
            path.append(range_hash(start, start + k, perfect))
            start = start + k
    path.reverse()
    return path


def consistency_path(old_size: int, new_size: int, perfect: PerfectSubtree) -> list[bytes]:
    """Return the consistency proof between two tree sizes (RFC 9162 §2.1.4.1).

    Raises:
        ValueError: unless ``0 < old_size <= new_size``.
    """
    if not 0 < old_size <= new_size:
        raise ValueError("a consistency proof needs 0 < old_size <= new_size")
    proof: list[bytes] = []
    m, start, end, complete = old_size, 0, new_size, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(range_hash(start, end, perfect))
            break
        k = split_point(n)
        if m <= k:
            proof.append(range_hash(start + k, end, perfect))
            end = start + k
        else:
            proof.append(range_hash(start, start + k, perfect))
            m -= k
            start += k
            complete = False
    proof.reverse()
    return proof


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Check an audit path against a tree head (RFC 9162 §2.1.3.2); ``leaf`` is a leaf hash."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and _equal(r, root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check a consistency proof between two tree heads (RFC 9162 §2.1.4.2)."""
    if old_size < 0 or new_size < old_size:
        return False
    if old_size == new_size:
        return len(proof) == 0 and _equal(old_root, new_root)
    if old_size == 0:
        # Every tree extends the empty tree; there is nothing to prove.
        return len(proof) == 0
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return _equal(fr, old_root) and _equal(sr, new_root) and sn == 0


def _equal(a: bytes, b: bytes) -> bool:
    import hmac

    return hmac.compare_digest(a, b)


@dataclass(frozen=True)
class PerfectNode:
    """A complete subtree that became whole when a leaf was appended."""

    level: int
    index: int
    hash: bytes


@dataclass
class Frontier:
    """The right edge of a growing tree: one perfect subtree per set bit of ``size``.

    Appending is O(1) amortized and memory is O(log n), which is what lets an import or a verifier
    stream through a ledger of any length.
    """

    size: int = 0
    stack: list[tuple[int, bytes]] = field(default_factory=list)

    @classmethod
    def from_perfect(cls, size: int, perfect: PerfectSubtree) -> Frontier:
        """Rebuild the frontier of a tree of ``size`` leaves from its stored perfect subtrees."""
        stack: list[tuple[int, bytes]] = []
        offset = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                stack.append((level, perfect(level, offset >> level)))
                offset += 1 << level
        return cls(size=size, stack=stack)

    def append(self, leaf: bytes) -> list[PerfectNode]:
        """Add a leaf hash; return the inner perfect subtrees (level >= 1) it completed."""
        completed: list[PerfectNode] = []
        level, h = 0, leaf
        self.size += 1
        while self.stack and self.stack[-1][0] == level:
            _, left = self.stack.pop()
            h = node_hash(left, h)
            level += 1
            completed.append(PerfectNode(level, (self.size >> level) - 1, h))
        self.stack.append((level, h))
        return completed

    def push(self, leaf: bytes, completed: list[tuple[int, int, bytes]]) -> None:
        """Add a leaf hash like :meth:`append`; add what it completed to ``completed``.

        The inner perfect subtrees go in as plain ``(level, index, hash)`` tuples (the hot path
        of an import).
        """
        stack = self.stack
        level, h = 0, leaf
        self.size += 1
        while stack and stack[-1][0] == level:
            h = hashlib.sha256(b"\x01" + stack.pop()[1] + h).digest()
            level += 1
            completed.append((level, (self.size >> level) - 1, h))
        stack.append((level, h))

    def append_subtree(self, level: int, h: bytes) -> list[PerfectNode]:
        """Append a whole perfect subtree of ``2**level`` leaves (its hash ``h``).

        Return the larger perfect subtrees it completed. The tree size must be a multiple of
        ``2**level``.
        """
        if self.size % (1 << level):
            raise ValueError("a subtree must start at a multiple of its width")
        completed: list[PerfectNode] = []
        self.size += 1 << level
        while self.stack and self.stack[-1][0] == level:
            _, left = self.stack.pop()
            h = node_hash(left, h)
            level += 1
            completed.append(PerfectNode(level, (self.size >> level) - 1, h))
        self.stack.append((level, h))
        return completed

    def extend(self, leaves: Iterable[bytes]) -> list[PerfectNode]:
        """Append several leaf hashes; return every inner perfect subtree they completed."""
        out: list[PerfectNode] = []
        for leaf in leaves:
            out.extend(self.append(leaf))
        return out

    def root(self) -> bytes:
        """Return the tree head of the leaves appended so far."""
        if not self.stack:
            return EMPTY_ROOT
        r = self.stack[-1][1]
        for _, h in reversed(self.stack[:-1]):
            r = node_hash(h, r)
        return r


def fold_root(stack: Sequence[tuple[int, bytes]]) -> bytes:
    """Return the tree head of a right edge given as perfect subtrees, largest first."""
    if not stack:
        return EMPTY_ROOT
    r = stack[-1][1]
    for _, h in reversed(stack[:-1]):
        r = node_hash(h, r)
    return r


def perfect_from_leaves(leaf_hashes: Sequence[bytes]) -> PerfectSubtree:
    """Return a :data:`PerfectSubtree` over in-memory leaf hashes (tests, small trees)."""

    def perfect(level: int, index: int) -> bytes:
        width = 1 << level
        start = index * width
        if start + width > len(leaf_hashes):
            raise ValueError("subtree outside the tree")
        return root_of(leaf_hashes[start : start + width])

    return perfect
