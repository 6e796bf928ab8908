import struct

import pytest

from psi.errors import MalformedMessage
from psi.wire import Abort, Hello, Labels, Points, PointsKind, Role, from_wire, to_wire

pytestmark = pytest.mark.unit

HELLO = Hello(
    run_id="r1",
    sender=Role.LEFT,
    seq=0,
    protocol="pec-ecdh-psi/1",
    rules="pec-norm/1",
    reveal="left",
    kinds=("phone", "email"),
    labeled=False,
    salt_share=b"\x01" * 32,
    sizes=(3, 4),
)
POINTS = Points("r1", Role.RIGHT, 2, PointsKind.DOUBLE, 1, 0, 2, 1, 10, b"\x07" * 20)
LABELS = Labels("r1", Role.RIGHT, 3, 0, 1, 2, 8, 24, b"\x09" * 64)
ABORT = Abort("r1", Role.LEFT, 0, "HandshakeMismatch", "different rules")


@pytest.mark.parametrize("message", [HELLO, POINTS, LABELS, ABORT])
def test_round_trip(message: object) -> None:
    assert from_wire(to_wire(message)) == message  # type: ignore[arg-type]


def test_truncated_frames_are_rejected() -> None:
    frame = to_wire(POINTS)
    for cut in (0, 5, 12, len(frame) - 1):
        with pytest.raises(MalformedMessage):
            from_wire(frame[:cut])


def test_padded_body_is_rejected() -> None:
    with pytest.raises(MalformedMessage, match="body"):
        from_wire(to_wire(POINTS) + b"\x00")
    with pytest.raises(MalformedMessage, match="body"):
        from_wire(to_wire(LABELS)[:-1])


def test_bad_magic_version_type() -> None:
    frame = bytearray(to_wire(HELLO))
    with pytest.raises(MalformedMessage, match="magic"):
        from_wire(b"XXXXXX" + bytes(frame[6:]))
    frame[6] = 9
    with pytest.raises(MalformedMessage, match="version"):
        from_wire(bytes(frame))
    frame = bytearray(to_wire(HELLO))
    frame[7] = 77
    with pytest.raises(MalformedMessage, match="type"):
        from_wire(bytes(frame))


def _with_header(header: bytes, kind: int = 2, body: bytes = b"") -> bytes:
    return struct.pack(">6sBBI", b"PECPSI", 1, kind, len(header)) + header + body


@pytest.mark.parametrize(
    "header",
    [
        b"not json",
        b"[1, 2]",
        b'{"run_id": "r", "sender": "middle", "seq": 0}',
        b'{"run_id": "r", "sender": "left", "seq": -1}',
        b'{"run_id": 5, "sender": "left", "seq": 0}',
        b'{"run_id": "r", "sender": "left", "seq": 0, "kind": "masked", "slot": 0, "chunk": 0,'
        b' "count": 1, "arity": 1, "width": "32"}',
    ],
)
def test_bad_headers(header: bytes) -> None:
    with pytest.raises(MalformedMessage):
        from_wire(_with_header(header))


def test_bad_hello_fields() -> None:
    good = to_wire(HELLO)
    for old, new in [
        (b'"salt_share":"01', b'"salt_share":"zz'),
        (b'"sizes":[3,4]', b'"sizes":[3,-4]'),
        (b'"labeled":false', b'"labeled":0'),
    ]:
        assert old in good
        bad = good.replace(old, new)
        head_len = len(bad) - 12
        with pytest.raises(MalformedMessage):
            from_wire(bad[:8] + head_len.to_bytes(4, "big") + bad[12:])
