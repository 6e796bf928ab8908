"""Parallel ledger verification: the log is cut into aligned chunks checked by worker processes.

Each chunk of ``2**chunk_level`` entries is a perfect subtree of the ledger's Merkle tree, so a
worker can check its entries, leaf hashes and every stored subtree inside the chunk on its own,
and return the chunk's right edge (plus the right edge at every signed tree head inside it). The
parent folds the chunks in order, checks the larger subtrees and every signed tree head, and names
the same first bad entry as the serial verifier. Workers only read; they never log entries.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consent.merkle import Frontier, fold_root, leaf_hash


@dataclass
class ChunkResult:
    """What a worker found in ``[start, start + count)``."""

    start: int
    count: int
    error: tuple[int | None, str] | None
    stack: list[tuple[int, bytes]]
    head_stacks: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)


def verify_chunk(url: str, start: int, end: int, head_sizes: list[int]) -> ChunkResult:
    """Check entries ``[start, end)`` (``start`` a multiple of the chunk width)."""
    from consent.ledger import _check_entry
    from consent.storage import SqlLedgerStore

    store = SqlLedgerStore.open(url, create=False)
    wanted = set(head_sizes)
    frontier = Frontier()
    completed: list[tuple[int, int, bytes]] = []
    heads: dict[int, list[tuple[int, bytes]]] = {}
    pos = start
    try:
        for page in store.iter_entry_pages(20_000, start, end):
            stored = store.nodes_ending_in(int(page[0][0]), int(page[-1][0]) + 1)
            for row in page:
                seq = int(row[0])
                if seq != pos:
                    return ChunkResult(
                        start,
                        pos - start,
                        (pos, "entry is missing (deleted?)"),
                        frontier.stack,
                        heads,
                    )
                problem = _check_entry(row, pos)
                if problem:
                    return ChunkResult(start, pos - start, (pos, problem), frontier.stack, heads)
                leaf = leaf_hash(row[3].encode("utf-8"))
                if stored.get((0, pos)) != leaf:
                    return ChunkResult(
                        start,
                        pos - start,
                        (pos, "stored leaf hash does not match the entry's content"),
                        frontier.stack,
                        heads,
                    )
                completed.clear()
                frontier.push(leaf, completed)
                for level, index, h in completed:
                    gidx = index + (start >> level)
                    if stored.get((level, gidx)) != h:
                        first = gidx << level
                        last = first + (1 << level) - 1
                        return ChunkResult(
                            start,
                            pos - start,
                            (
                                first,
                                f"entries {first}..{last} disagree with the stored Merkle "
                                "subtree: an entry in this range was rewritten with its leaf hash",
                            ),
                            frontier.stack,
                            heads,
                        )
                pos += 1
                if pos in wanted:
                    heads[pos] = list(frontier.stack)
    finally:
        store.close()
    return ChunkResult(start, pos - start, None, frontier.stack, heads)


def run_chunks(
    url: str,
    extent: int,
    chunk_level: int,
    workers: int,
    head_sizes_for: object,
) -> Iterator[ChunkResult]:
    """Yield chunk results in log order, keeping at most ``2 * workers`` chunks in flight."""
    width = 1 << chunk_level
    starts = list(range(0, extent, width))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: list[Future[ChunkResult]] = []
        nxt = 0
        while nxt < len(starts) or pending:
            while nxt < len(starts) and len(pending) < 2 * workers:
                a = starts[nxt]
                b = min(a + width, extent)
                sizes = head_sizes_for(a, b)  # type: ignore[operator]
                pending.append(pool.submit(verify_chunk, url, a, b, sizes))
                nxt += 1
            result = pending.pop(0).result()
            yield result
            if result.error is not None or result.count < min(width, extent - result.start):
                for f in pending:
                    f.cancel()
                return


__all__ = ["ChunkResult", "Ed25519PublicKey", "fold_root", "run_chunks", "verify_chunk"]
