import threading
from multiprocessing import Pipe

import pytest

from pec.crypto.masking import hash_to_u
from psi.batch import InlineEngine, PoolEngine
from psi.errors import HandshakeMismatch, InvalidPeerPoint, PsiAborted
from psi.normalize import KeyKind
from psi.protocol import PsiParty, Reveal
from psi.session import ConnectionChannel, memory_channel_pair, run_party
from psi.wire import Abort, Points, PointsKind, Role, from_wire, to_wire
from tests.psi.helpers import make_parties


def _run_threads(a: PsiParty, b: PsiParty, ca, cb, timeout: float = 20.0):
    results: dict[str, object] = {}

    def go(name: str, party: PsiParty, channel) -> None:
        try:
            results[name] = run_party(party, channel, timeout=timeout)
        except Exception as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=go, args=("a", a, ca)),
        threading.Thread(target=go, args=("b", b, cb)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    return results["a"], results["b"]


@pytest.mark.unit
def test_memory_channels_run_to_completion() -> None:
    left = [(f"id{i}",) for i in range(50)]
    right = [(f"id{i}",) for i in range(25, 90)]
    a, b = make_parties(left, right, (KeyKind.RAW,), Reveal.BOTH, chunk_size=16)
    ca, cb = memory_channel_pair()
    ra, rb = _run_threads(a, b, ca, cb)
    assert ra.matched_rows.tolist() == list(range(25, 50))
    assert rb.matched_rows.tolist() == list(range(25))


@pytest.mark.unit
def test_mismatch_stops_both_sides() -> None:
    a, _ = make_parties([("x",)], [("x",)], (KeyKind.RAW,), Reveal.LEFT)
    _, b = make_parties([("x",)], [("x",)], (KeyKind.RAW,), Reveal.BOTH)
    ca, cb = memory_channel_pair()
    ra, rb = _run_threads(a, b, ca, cb, timeout=5)
    assert isinstance(ra, HandshakeMismatch) and isinstance(rb, HandshakeMismatch)


@pytest.mark.unit
def test_a_failing_party_sends_an_abort_with_code_and_reason() -> None:
    a, b = make_parties([("x",)], [("y",)], (KeyKind.RAW,), Reveal.LEFT)
    ca, cb = memory_channel_pair()
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(_try(run_party, a, ca)))
    thread.start()
    from_wire(cb.recv(5))  # a's hello
    hello_b = next(b.start())
    cb.send(to_wire(hello_b))
    forged = Points("run-1", Role.RIGHT, 1, PointsKind.MASKED, 0, 0, 1, 1, 32, bytes(32))
    cb.send(to_wire(forged))
    frames = []
    while True:
        message = from_wire(cb.recv(5))
        frames.append(message)
        if isinstance(message, Abort):
            break
    thread.join(timeout=10)
    assert isinstance(outcome[0], InvalidPeerPoint)
    assert message.code == "InvalidPeerPoint" and "point 0" in message.reason


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:
        return exc


@pytest.mark.unit
def test_silent_peer_times_out() -> None:
    a, _ = make_parties([("x",)], [("x",)], (KeyKind.RAW,), Reveal.LEFT)
    ca, _cb = memory_channel_pair()
    with pytest.raises(PsiAborted, match="within"):
        run_party(a, ca, timeout=0.2)


@pytest.mark.integration
def test_pipe_channel_between_threads_streams_large_chunks() -> None:
    left = [(f"id{i}",) for i in range(600)]
    right = [(f"id{i}",) for i in range(300, 1000)]
    a, b = make_parties(left, right, (KeyKind.RAW,), Reveal.BOTH, chunk_size=64)
    c1, c2 = Pipe(duplex=True)
    ra, rb = _run_threads(a, b, ConnectionChannel(c1), ConnectionChannel(c2))
    assert ra.matched_rows.size == 300 and rb.matched_rows.size == 300


@pytest.mark.integration
def test_pool_engine_equals_inline() -> None:
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449a44")
    values = [f"v{i}".encode() for i in range(300)]
    salt = bytes(32)
    pool = PoolEngine(workers=2, min_split=50)
    try:
        inline = InlineEngine()
        masked = pool.hash_and_mask(scalar, salt, b"t", values)
        assert masked == inline.hash_and_mask(scalar, salt, b"t", values)
        assert pool.mask_and_truncate(scalar, masked, 10) == inline.mask_and_truncate(
            scalar, masked, 10
        )
        points = b"".join(hash_to_u(v, salt, b"t") for v in values)
        assert pool.mask_and_truncate(scalar, points, 32) == inline.mask_and_truncate(
            scalar, points, 32
        )
    finally:
        pool.close()


@pytest.mark.integration
def test_the_pipe_channel_queues_frames_and_flush_waits_until_the_peer_takes_them() -> None:
    ours, theirs = Pipe(duplex=True)
    channel = ConnectionChannel(ours)
    frames = [bytes([i]) * (4 << 20) for i in range(3)]  # far more than a socket buffer holds
    try:
        for frame in frames:  # returns although the peer reads nothing yet
            channel.send(frame)
        with pytest.raises(PsiAborted, match="took no message"):
            channel.flush(0.3)
        received: list[bytes] = []
        reader = threading.Thread(
            target=lambda: received.extend(theirs.recv_bytes() for _ in frames)
        )
        reader.start()
        channel.flush(20.0)
        reader.join(20.0)
        assert received == frames  # whole and in order
        with pytest.raises(PsiAborted, match="sends nothing more"):
            channel.send(b"late")
    finally:
        channel.close()
        theirs.close()


@pytest.mark.integration
def test_the_pipe_channel_reports_a_broken_link_on_send_and_flush() -> None:
    ours, theirs = Pipe(duplex=True)
    theirs.close()
    channel = ConnectionChannel(ours)
    try:
        with pytest.raises(PsiAborted, match="broken"):
            for _ in range(100):  # the writer finds the link broken at its first frame
                channel.send(b"x" * 1024)
            channel.flush(5.0)
    finally:
        channel.close()
