from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_path,
    inclusion_path,
    leaf_hash,
    node_hash,
    perfect_from_leaves,
    range_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

pytestmark = pytest.mark.unit

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc6962.json").read_text())
LEAVES = [leaf_hash(bytes.fromhex(x)) for x in VECTORS["leaves"]]


def _naive_mth(hashes: list[bytes]) -> bytes:
    # Straight from the RFC text, recursive, for cross-checking the iterative code.
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node_hash(_naive_mth(hashes[:k]), _naive_mth(hashes[k:]))


@pytest.mark.parametrize("size", range(9))
def test_root_matches_known_answer(size: int) -> None:
    assert root_of(LEAVES[:size]).hex() == VECTORS["roots"][size]


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: f"{c['index']}-{c['size']}")
def test_inclusion_path_matches_known_answer(case: dict[str, object]) -> None:
    index, size = int(case["index"]), int(case["size"])  # type: ignore[call-overload]
    path = inclusion_path(index, size, perfect_from_leaves(LEAVES[:size]))
    assert [h.hex() for h in path] == case["path"]
    root = bytes.fromhex(VECTORS["roots"][size])
    assert verify_inclusion(LEAVES[index], index, size, path, root)


@pytest.mark.parametrize(
    "case", VECTORS["consistency"], ids=lambda c: f"{c['old_size']}-{c['new_size']}"
)
def test_consistency_proof_matches_known_answer(case: dict[str, object]) -> None:
    m, n = int(case["old_size"]), int(case["new_size"])  # type: ignore[call-overload]
    proof = consistency_path(m, n, perfect_from_leaves(LEAVES[:n]))
    assert [h.hex() for h in proof] == case["proof"]
    old_root, new_root = (bytes.fromhex(VECTORS["roots"][s]) for s in (m, n))
    assert verify_consistency(m, n, old_root, new_root, proof)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_proofs_verify_and_tampering_fails(items: list[bytes], data: st.DataObject) -> None:
    hashes = [leaf_hash(x) for x in items]
    n = len(hashes)
    perfect = perfect_from_leaves(hashes)
    root = root_of(hashes)
    assert root == _naive_mth(hashes)
    i = data.draw(st.integers(0, n - 1))
    path = inclusion_path(i, n, perfect)
    assert verify_inclusion(hashes[i], i, n, path, root)
    other = leaf_hash(b"other" + items[i])
    assert not verify_inclusion(other, i, n, path, root)
    if n > 1:
        assert (
            not verify_inclusion(hashes[i], (i + 1) % n, n, path, root)
            or hashes[i] == hashes[(i + 1) % n]
        )
    if path:
        bad = list(path)
        bad[0] = bytes(32)
        assert not verify_inclusion(hashes[i], i, n, bad, root)
    m = data.draw(st.integers(1, n))
    proof = consistency_path(m, n, perfect)
    old_root = root_of(hashes[:m])
    assert verify_consistency(m, n, old_root, root, proof)
    if m < n:
        assert not verify_consistency(m, n, leaf_hash(b"x"), root, proof)
        assert not verify_consistency(m, n, old_root, leaf_hash(b"x"), proof)


@given(st.integers(1, 300), st.data())
def test_frontier_and_range_hash_agree_with_naive(n: int, data: st.DataObject) -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    frontier = Frontier()
    completed = {}
    for h in hashes:
        for node in frontier.append(h):
            completed[(node.level, node.index)] = node.hash
    assert frontier.root() == _naive_mth(hashes)
    for (level, index), h in completed.items():
        assert h == _naive_mth(hashes[index << level : (index + 1) << level])
    # Rebuilding the frontier from stored perfect subtrees resumes the same tree.
    cut = data.draw(st.integers(0, n))
    resumed = Frontier.from_perfect(cut, perfect_from_leaves(hashes))
    resumed.extend(hashes[cut:])
    assert resumed.root() == frontier.root()
    assert range_hash(0, n, perfect_from_leaves(hashes)) == frontier.root()


def test_bad_arguments() -> None:
    perfect = perfect_from_leaves(LEAVES)
    with pytest.raises(ValueError):
        inclusion_path(8, 8, perfect)
    with pytest.raises(ValueError):
        consistency_path(0, 8, perfect)
    with pytest.raises(ValueError):
        consistency_path(5, 4, perfect)
    assert not verify_inclusion(LEAVES[0], 3, 3, [], EMPTY_ROOT)
    assert not verify_consistency(4, 3, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(3, 3, root_of(LEAVES[:3]), root_of(LEAVES[:3]), [])
    assert not verify_consistency(3, 3, root_of(LEAVES[:3]), root_of(LEAVES[:4]), [])
