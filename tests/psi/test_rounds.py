import pytest

from psi.errors import MalformedMessage, PsiAborted
from psi.normalize import KeyKind
from psi.protocol import Reveal
from psi.rounds import Batch, PsiResponder, drive_rounds, pack_frames, unpack_frames
from tests.psi.helpers import make_parties

pytestmark = pytest.mark.unit

LEFT = [("id1", "a@x.com"), ("id2", None), ("id3", "c@x.com"), ("id9", None)]
RIGHT = [("id1", None), ("id7", "c@x.com"), ("id8", "z@x.com")]
KINDS = (KeyKind.RAW, KeyKind.EMAIL)


@pytest.mark.parametrize("reveal", list(Reveal))
def test_every_mode_takes_two_round_trips(reveal: Reveal) -> None:
    brand, partner = make_parties(LEFT, RIGHT, KINDS, reveal, chunk_size=2)
    responder = PsiResponder(partner)
    rounds: list[int] = []
    result = drive_rounds(
        brand, responder.answer, on_round=lambda n, sent, received: rounds.append(n)
    )
    assert rounds == [1, 2]
    assert partner.done
    if reveal in (Reveal.LEFT, Reveal.BOTH):
        assert result.matched_rows.tolist() == [0, 2]
    if reveal in (Reveal.RIGHT, Reveal.BOTH):
        assert partner.result().matched_rows.tolist() == [0, 1]
    if reveal is Reveal.COUNT:
        assert result.count == 2 and partner.result().count == 2


def test_labeled_psi_in_two_round_trips() -> None:
    brand, partner = make_parties(
        [("id1",), ("id5",)],
        [("id1",), ("id2",)],
        (KeyKind.RAW,),
        Reveal.LEFT,
        payload=["t1", "t2"],
    )
    result = drive_rounds(brand, PsiResponder(partner).answer)
    assert result.matched_rows.tolist() == [0]
    assert result.payloads == {0: [b'[["t1"]]']}


def test_batch_round_trip_and_malformed_batches() -> None:
    batch = Batch((b"abc", b"", b"\x00" * 5), done=True)
    assert unpack_frames(pack_frames(batch)) == batch
    packed = pack_frames(batch)
    for bad in (packed[:-1], packed + b"x", b"XXXX" + packed[4:], packed[:3]):
        with pytest.raises(MalformedMessage):
            unpack_frames(bad)


def test_a_silent_responder_stalls_the_run() -> None:
    brand, _ = make_parties([("id1",)], [("id1",)], (KeyKind.RAW,), Reveal.LEFT)
    with pytest.raises(PsiAborted, match="stalled"):
        drive_rounds(brand, lambda request: pack_frames(Batch(())))
