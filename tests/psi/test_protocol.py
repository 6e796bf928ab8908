from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psi.errors import (
    HandshakeMismatch,
    InvalidPeerPoint,
    PsiAborted,
    PsiError,
    UnexpectedMessage,
)
from psi.normalize import KeyKind, normalize_column
from psi.protocol import Reveal, Stage, truncation_width
from psi.wire import Abort, Points, PointsKind, Role, from_wire, to_wire
from tests.psi.helpers import RULES, exchange, make_parties, run

pytestmark = pytest.mark.unit

# small alphabets so that random tables overlap often
raw_value = st.one_of(st.none(), st.just(""), st.sampled_from([f"id{i}" for i in range(12)]))
email_value = st.one_of(
    st.none(),
    st.sampled_from(["a@x.com", " A@X.com", "b@y.org", "B@y.org ", "c@z.cn", "bad", "d@x.com"]),
)
phone_value = st.one_of(
    st.none(),
    st.sampled_from(
        ["13812345678", "+86 138-1234-5678", "13900000000", "0086 13700000000", "12", "x"]
    ),
)
KINDS_2 = (KeyKind.RAW, KeyKind.EMAIL)


def tables(kinds: tuple[KeyKind, ...]):
    columns = {KeyKind.RAW: raw_value, KeyKind.EMAIL: email_value, KeyKind.PHONE: phone_value}
    row = st.tuples(*(columns[k] for k in kinds))
    return st.lists(row, min_size=0, max_size=12)


def normalized(rows, kinds):
    import pandas as pd

    cols = [
        normalize_column(pd.Series([r[k] for r in rows], dtype=object), kind, RULES).values.tolist()
        for k, kind in enumerate(kinds)
    ]
    return [tuple(c[i] for c in cols) for i in range(len(rows))]


def expected_rows(mine, theirs, kinds):
    a, b = normalized(mine, kinds), normalized(theirs, kinds)
    sets = [{r[k] for r in b if r[k] is not None} for k in range(len(kinds))]
    return [
        i for i, r in enumerate(a) if any(v is not None and v in sets[k] for k, v in enumerate(r))
    ]


def expected_count(mine, theirs, kinds):
    a, b = normalized(mine, kinds), normalized(theirs, kinds)
    sets = [{r[k] for r in b if r[k] is not None} for k in range(len(kinds))]
    records = {r for r in a if any(v is not None for v in r)}
    return sum(any(v is not None and v in sets[k] for k, v in enumerate(r)) for r in records)


@pytest.mark.parametrize("kinds", [(KeyKind.RAW,), KINDS_2, (KeyKind.PHONE, KeyKind.EMAIL)])
@pytest.mark.parametrize("reveal", [Reveal.LEFT, Reveal.RIGHT, Reveal.BOTH])
@given(data=st.data())
def test_row_modes_equal_plaintext_intersection(kinds, reveal, data) -> None:
    left, right = data.draw(tables(kinds)), data.draw(tables(kinds))
    lres, rres, _ = run(left, right, kinds, reveal)
    if reveal.learns_rows(Role.LEFT):
        assert lres.matched_rows.tolist() == expected_rows(left, right, kinds)
    else:
        assert lres.matched_rows is None and lres.count is None
    if reveal.learns_rows(Role.RIGHT):
        assert rres.matched_rows.tolist() == expected_rows(right, left, kinds)
    else:
        assert rres.matched_rows is None and rres.count is None


@pytest.mark.parametrize("kinds", [(KeyKind.RAW,), KINDS_2, (KeyKind.PHONE, KeyKind.EMAIL)])
@given(data=st.data())
def test_count_mode_equals_plaintext_cardinality(kinds, data) -> None:
    left, right = data.draw(tables(kinds)), data.draw(tables(kinds))
    lres, rres, _ = run(left, right, kinds, Reveal.COUNT)
    assert lres.matched_rows is None and rres.matched_rows is None
    assert lres.count == expected_count(left, right, kinds)
    assert rres.count == expected_count(right, left, kinds)


@pytest.mark.parametrize("kinds", [(KeyKind.RAW,), KINDS_2, (KeyKind.PHONE, KeyKind.EMAIL)])
@given(data=st.data())
def test_labeled_psi_delivers_payloads_of_matches_only(kinds, data) -> None:
    import json

    left = data.draw(tables(kinds))
    right = data.draw(tables(kinds))
    tags = [f"tag{i}" for i in range(len(right))]
    lres, rres, _ = run(left, right, kinds, Reveal.LEFT, payload=tags)
    assert rres.matched_rows is None
    assert lres.matched_rows.tolist() == expected_rows(left, right, kinds)
    assert set(lres.payloads) == set(lres.matched_rows.tolist())
    mine, theirs = normalized(left, kinds), normalized(right, kinds)
    for row, blobs in lres.payloads.items():
        got = [item[0] for blob in blobs for item in json.loads(blob)]
        want = {
            tags[j]
            for j, r in enumerate(theirs)
            if any(v is not None and v == mine[row][k] for k, v in enumerate(r))
        }
        # deliveries are per matched key slot: a right row matching on two slots may come twice
        assert set(got) == want
        if len(kinds) == 1:
            assert sorted(got) == sorted(want)


def test_multi_key_counts_a_row_once_and_reports_per_key() -> None:
    left = [("id1", "a@x.com"), ("id2", "zz@x.com"), ("id9", "b@y.org")]
    right = [("id1", "a@x.com"), ("id7", "b@y.org"), ("id2", None)]
    lres, rres, _ = run(left, right, KINDS_2, Reveal.BOTH)
    assert lres.matched_rows.tolist() == [0, 1, 2]
    assert lres.per_key == (2, 2)
    assert rres.matched_rows.tolist() == [0, 1, 2]


def test_transcript_carries_no_identifier() -> None:
    left = [("13812345678", "secret.person@example.com"), ("13900000000", None)]
    right = [("+86 138 1234 5678", "other@example.com")]
    kinds = (KeyKind.PHONE, KeyKind.EMAIL)
    for reveal in Reveal:
        _, _, transcript = run(left, right, kinds, reveal)
        blob = b"".join(transcript)
        for needle in [b"13812345678", b"8613812345678", b"secret.person", b"example.com"]:
            assert needle not in blob, (reveal, needle)


def test_truncation_width_bound() -> None:
    assert truncation_width(10, 10) == 8
    assert truncation_width(10**6, 10**6) == 10
    assert truncation_width(10**9, 10**9) == 13
    w = truncation_width(10**6, 10**6)
    assert 10**12 * 2.0 ** (-8 * w) <= 2**-40


# -- negative tests: messages that must be refused ---------------------------------------


def _started(reveal=Reveal.LEFT):
    a, b = make_parties([("id1",), ("id2",)], [("id2",), ("id3",)], (KeyKind.RAW,), reveal)
    hello_a = from_wire(to_wire(next(a.start())))
    hello_b = from_wire(to_wire(next(b.start())))
    return a, b, hello_a, hello_b


def test_replayed_message_is_rejected() -> None:
    a, b, hello_a, hello_b = _started()
    out_b = list(b.receive(hello_a))
    with pytest.raises(UnexpectedMessage, match="replayed"):
        list(b.receive(hello_a))
    assert b.stage is Stage.FAILED
    assert out_b  # b had answered with its masked values before


def test_out_of_order_sequence_is_rejected() -> None:
    a, b, hello_a, hello_b = _started()
    list(a.receive(hello_b))
    masked = list(b.receive(hello_a))
    skipped = replace(masked[0], seq=masked[0].seq + 1)
    with pytest.raises(UnexpectedMessage, match="out of order"):
        list(a.receive(skipped))


def test_points_before_hello_are_rejected() -> None:
    a, b, hello_a, hello_b = _started()
    list(b.receive(hello_a))
    early = Points("run-1", Role.LEFT, 1, PointsKind.MASKED, 0, 0, 1, 1, 32, b"\x09" + bytes(31))
    a2, _ = make_parties([("x",)], [("y",)], (KeyKind.RAW,), Reveal.LEFT)
    next(a2.start())
    with pytest.raises(UnexpectedMessage, match="not expected"):
        list(a2.receive(replace(early, sender=Role.RIGHT, seq=0)))


def test_wrong_run_and_wrong_sender_are_rejected() -> None:
    a, b, hello_a, hello_b = _started()
    with pytest.raises(UnexpectedMessage, match="another run"):
        list(b.receive(replace(hello_a, run_id="other")))
    a, b, hello_a, hello_b = _started()
    with pytest.raises(UnexpectedMessage, match="come from"):
        list(b.receive(replace(hello_a, sender=Role.RIGHT)))


@pytest.mark.parametrize(
    ("field", "value"),
    [("rules", "pec-norm/0"), ("reveal", "both"), ("kinds", ("email",)), ("protocol", "v0")],
)
def test_handshake_mismatch(field: str, value: object) -> None:
    a, b, hello_a, hello_b = _started()
    with pytest.raises(HandshakeMismatch):
        list(b.receive(replace(hello_a, **{field: value})))
    assert b.stage is Stage.FAILED
    with pytest.raises(UnexpectedMessage):
        list(b.receive(hello_a))  # a failed party refuses further use


def test_invalid_point_from_peer() -> None:
    a, b, hello_a, hello_b = _started()
    list(a.receive(hello_b))
    masked = list(b.receive(hello_a))
    bad = replace(masked[0], body=bytes(32) + masked[0].body[32:])
    with pytest.raises(InvalidPeerPoint, match="point 0"):
        list(a.receive(bad))
    assert a.stage is Stage.FAILED


def test_chunk_out_of_order_and_overflow() -> None:
    a, b, hello_a, hello_b = _started()
    list(a.receive(hello_b))
    masked = list(b.receive(hello_a))
    with pytest.raises(UnexpectedMessage, match="chunk 1 out of order"):
        list(a.receive(replace(masked[0], chunk=1)))
    a, b, hello_a, hello_b = _started()
    list(a.receive(hello_b))
    masked = list(b.receive(hello_a))
    doubled = replace(masked[0], count=3, body=masked[0].body * 3)
    with pytest.raises(UnexpectedMessage, match="more values than announced"):
        list(a.receive(doubled))


def test_double_values_to_a_side_that_learns_nothing() -> None:
    a, b, hello_a, hello_b = _started(Reveal.LEFT)
    list(b.receive(hello_a))
    fake = Points("run-1", Role.LEFT, 1, PointsKind.DOUBLE, 0, 0, 1, 1, 8, bytes(8))
    with pytest.raises(UnexpectedMessage, match="learns nothing"):
        list(b.receive(fake))


def test_abort_from_peer_stops_the_party() -> None:
    a, b, hello_a, hello_b = _started()
    with pytest.raises(PsiAborted, match="rules differ"):
        list(b.receive(Abort("run-1", Role.LEFT, 1, "HandshakeMismatch", "rules differ")))
    assert b.stage is Stage.FAILED


@pytest.mark.parametrize(("run_id", "sender"), [("run-2", Role.LEFT), ("run-1", Role.RIGHT)])
def test_an_abort_from_another_run_or_sender_is_refused(run_id: str, sender: Role) -> None:
    a, b, hello_a, hello_b = _started()
    with pytest.raises(UnexpectedMessage, match="another run or sender"):
        list(b.receive(Abort(run_id, sender, 1, "HandshakeMismatch", "rules differ")))
    assert b.stage is Stage.FAILED


def test_single_use_objects() -> None:
    a, b = make_parties([("x",)], [("x",)], (KeyKind.RAW,), Reveal.BOTH)
    with pytest.raises(PsiError):
        a.result()
    exchange(a, b)
    with pytest.raises(UnexpectedMessage):
        a.start()
    with pytest.raises(UnexpectedMessage, match="stage done"):
        list(
            a.receive(
                from_wire(
                    to_wire(
                        next(
                            iter(
                                make_parties([("x",)], [("x",)], (KeyKind.RAW,), Reveal.BOTH)[
                                    1
                                ].start()
                            )
                        )
                    )
                )
            )
        )
    assert a.result().matched_rows.tolist() == [0]


def test_empty_sides_complete() -> None:
    lres, rres, _ = run([], [("id1",)], (KeyKind.RAW,), Reveal.BOTH)
    assert lres.matched_rows.size == 0 and rres.matched_rows.size == 0
    lres, rres, _ = run([(None,)], [(None,)], (KeyKind.RAW,), Reveal.COUNT)
    assert lres.count == 0 and rres.count == 0


def test_count_mode_returns_are_shuffled_globally() -> None:
    # The right side doubly masks the left's records and returns them in an order of its own,
    # across chunks, so that the left cannot map a returned value back to a row. Recompute each
    # returned value from what the left sent, with the right's key, and compare the orders.
    from psi.batch import mask_and_truncate

    left = [(f"id{i}",) for i in range(40)]
    a, b = make_parties(left, left, (KeyKind.RAW,), Reveal.COUNT, chunk_size=7)
    frames = [from_wire(f) for f in exchange(a, b)]
    assert a.result().count == 40

    def bodies(sender: Role, kind: PointsKind) -> list[Points]:
        return [
            m for m in frames if isinstance(m, Points) and m.sender is sender and m.kind is kind
        ]

    sent = b"".join(m.body for m in bodies(Role.LEFT, PointsKind.MASKED))
    returned = bodies(Role.RIGHT, PointsKind.DOUBLE)
    width = returned[0].width
    expected = mask_and_truncate(b._key.raw_scalar(), sent, width, b._curve_only)
    in_sent_order = [expected[i : i + width] for i in range(0, len(expected), width)]
    got = [m.body[i : i + width] for m in returned for i in range(0, len(m.body), width)]
    assert len(got) == 40 and sorted(got) == sorted(in_sent_order)
    position = {value: i for i, value in enumerate(in_sent_order)}
    order = [position[value] for value in got]
    assert order != sorted(order)  # 1 in 40! by chance
    # not only within chunks: some value comes back in another chunk than it went in
    assert any(position[value] // 7 != i // 7 for i, value in enumerate(got))


def test_multi_key_count_mode_shows_records_sharing_a_value() -> None:
    # The leak docs/threat-model.md describes: the right sees that two of the left's records
    # share a phone, and the left finds its two records sharing p1 among the shuffled returns.
    kinds = (KeyKind.PHONE, KeyKind.EMAIL)
    left = [
        ("13812345678", "a@x.com"),
        ("13812345678", "b@x.com"),
        ("13900000000", "c@x.com"),
        ("13700000000", "d@x.com"),
    ]
    right = [("13812345678", "z@x.com")]
    a, b = make_parties(left, right, kinds, Reveal.COUNT, chunk_size=2)
    frames = [from_wire(f) for f in exchange(a, b)]
    assert a.result().count == 2

    def phones(sender: Role, kind: PointsKind) -> list[bytes]:
        records = [
            m.body[i : i + m.width * 2]
            for m in frames
            if isinstance(m, Points) and m.sender is sender and m.kind is kind
            for i in range(0, len(m.body), m.width * 2)
        ]
        return [record[: len(record) // 2] for record in records]

    seen_by_right = phones(Role.LEFT, PointsKind.MASKED)
    assert len(seen_by_right) == 4 and len(set(seen_by_right)) == 3  # one phone, twice
    returned = phones(Role.RIGHT, PointsKind.DOUBLE)
    shared = {value for value in returned if returned.count(value) == 2}
    assert len(shared) == 1  # the left's two records with 13812345678, recognisable
    # ... and the left's key turns the right's phone into that same value: p1 matched
    from psi.batch import mask_and_truncate

    (right_phone,) = phones(Role.RIGHT, PointsKind.MASKED)
    width = len(returned[0])
    assert mask_and_truncate(a._key.raw_scalar(), right_phone, width, a._curve_only) in shared


def test_duplicates_are_sent_once() -> None:
    left = [("id1",), ("id1",), ("id1",), ("id2",), (None,)]
    right = [("id1",)]
    _, _, transcript = run(left, right, (KeyKind.RAW,), Reveal.LEFT)
    masked_from_left = [
        m
        for m in map(from_wire, transcript)
        if isinstance(m, Points) and m.kind is PointsKind.MASKED and m.sender is Role.LEFT
    ]
    points = [b"".join(m.body for m in masked_from_left)[i : i + 32] for i in range(0, 64, 32)]
    assert sum(m.count for m in masked_from_left) == 2  # id1 and id2, once each
    assert len(set(points)) == 2


@given(data=st.data())
def test_alignment_ids_pair_the_matched_rows(data) -> None:
    kinds = (KeyKind.RAW,)
    left, right = data.draw(tables(kinds)), data.draw(tables(kinds))
    a, b = make_parties(left, right, kinds, Reveal.BOTH, align=True)
    exchange(a, b)
    lres, rres = a.result(), b.result()
    assert set(lres.match_ids) == set(lres.matched_rows.tolist())
    assert set(rres.match_ids) == set(rres.matched_rows.tolist())
    left_values, right_values = normalized(left, kinds), normalized(right, kinds)
    for i, lid in lres.match_ids.items():
        partners = {j for j, rid in rres.match_ids.items() if rid == lid}
        assert partners == {j for j, r in enumerate(right_values) if r[0] == left_values[i][0]}


def test_alignment_needs_both_sides_to_learn_and_to_agree() -> None:
    with pytest.raises(ValueError, match="reveal=both"):
        make_parties([("x",)], [("x",)], (KeyKind.RAW,), Reveal.LEFT, align=True)
    a, _ = make_parties([("x",)], [("x",)], (KeyKind.RAW,), Reveal.BOTH, align=True)
    _, b = make_parties([("x",)], [("x",)], (KeyKind.RAW,), Reveal.BOTH)
    hello_a = from_wire(to_wire(next(a.start())))
    next(b.start())
    with pytest.raises(HandshakeMismatch, match="alignment"):
        list(b.receive(hello_a))


@pytest.mark.parametrize("reveal", [Reveal.LEFT, Reveal.COUNT])
def test_progress_reports_each_stage_from_zero_to_its_total(reveal: Reveal) -> None:
    events: list[tuple[Role, str, int, int]] = []
    rows = [[f"id{i}"] for i in range(10)]
    left, right = make_parties(
        rows, rows[3:], [KeyKind.RAW], reveal, chunk_size=4, progress=lambda *e: events.append(e)
    )
    exchange(left, right)
    for role, own, peer in ((Role.LEFT, 10, 7), (Role.RIGHT, 7, 10)):
        for stage, total in (("mask own", own), ("mask peer", peer)):
            seen = [(d, t) for r, s, d, t in events if r is role and s == stage]
            assert seen[0] == (0, total), (role, stage)  # the bar starts when the work does
            assert seen[-1] == (total, total)
            assert [d for d, _ in seen] == sorted(d for d, _ in seen)
