"""The direct job stream: pinned TLS both ways, the offer's token, framing, bounded waits."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from parties.errors import PartyError
from parties.stream import StreamListener, _context, dial, ephemeral_certificate, send_frame

pytestmark = pytest.mark.unit


def serve_echo(offer: dict, cert: bytes, key: bytes, stop_after: int):
    count = {"n": 0}
    outcome: dict[str, BaseException | None] = {}
    done = threading.Event()

    def answer(request: bytes) -> bytes:
        count["n"] += 1
        return request[::-1]

    def finished(error: BaseException | None) -> None:
        outcome["error"] = error
        done.set()

    dial(
        offer,
        cert,
        key,
        answer,
        done=lambda: count["n"] >= stop_after,
        finished=finished,
        timeout=10,
    )
    return outcome, done


def test_requests_and_replies_cross_the_pinned_stream() -> None:
    listener = StreamListener()
    cert, key = ephemeral_certificate()
    outcome, done = serve_echo(listener.offer(), cert, key, stop_after=3)
    exchange = listener.accept(cert, timeout=10, io_timeout=10)
    assert exchange(b"abc") == b"cba"
    big = bytes(range(256)) * 40_000  # 10 MB in one frame
    assert exchange(big) == big[::-1]
    assert exchange(b"") == b""
    assert done.wait(10) and outcome["error"] is None
    exchange.close()


def test_a_connection_with_another_certificate_is_refused() -> None:
    listener = StreamListener()
    announced, _ = ephemeral_certificate()  # what the partner sent over Flower
    intruder_cert, intruder_key = ephemeral_certificate()  # someone else dials
    outcome, done = serve_echo(listener.offer(), intruder_cert, intruder_key, stop_after=1)
    with pytest.raises(PartyError, match="did not connect"):
        listener.accept(announced, timeout=10, io_timeout=10)
    assert done.wait(10) and outcome["error"] is not None


def test_a_server_with_another_certificate_is_refused_by_the_partner() -> None:
    listener = StreamListener()
    cert, key = ephemeral_certificate()
    offer = listener.offer() | {"cert": ephemeral_certificate()[0].decode()}  # forged offer
    outcome, done = serve_echo(offer, cert, key, stop_after=1)
    with pytest.raises(PartyError):
        listener.accept(cert, timeout=10, io_timeout=10)
    assert done.wait(10) and isinstance(outcome["error"], ssl.SSLError | OSError)


def test_the_wrong_token_is_refused() -> None:
    listener = StreamListener()
    cert, key = ephemeral_certificate()
    outcome, done = serve_echo(listener.offer() | {"token": "00" * 32}, cert, key, stop_after=1)
    with pytest.raises(PartyError, match="token"):
        listener.accept(cert, timeout=10, io_timeout=10)
    assert done.wait(10) and outcome["error"] is not None


def test_nobody_connecting_ends_within_the_deadline() -> None:
    listener = StreamListener()
    cert, _ = ephemeral_certificate()
    with pytest.raises(PartyError, match="did not connect"):
        listener.accept(cert, timeout=0.5, io_timeout=1)


def test_a_frame_larger_than_announced_limit_is_refused() -> None:
    listener = StreamListener()
    brand_cert, brand_key = listener.cert, listener._key
    cert, key = ephemeral_certificate()
    offer = listener.offer()

    def partner() -> None:
        context = _context(False, cert, key, brand_cert)
        address = ("127.0.0.1", int(offer["port"]))
        with (
            socket.create_connection(address, timeout=10) as raw,
            context.wrap_socket(raw) as sock,
        ):
            send_frame(sock, str(offer["token"]).encode())
            sock.recv(100)  # the brand's request
            sock.sendall((1 << 40).to_bytes(8, "big"))  # announces 1 TB
            sock.recv(1)

    threading.Thread(target=partner, daemon=True).start()
    exchange = listener.accept(cert, timeout=10, io_timeout=10)
    with pytest.raises(PartyError, match="oversized"):
        exchange(b"request")
    exchange.close()
    del brand_key


def test_an_offer_rides_on_a_payload_and_malformed_offers_are_refused() -> None:
    from parties.stream import pack_offer, unpack_offer

    packed = pack_offer({"job": "j1", "port": 5}, b"PECB-batch")
    assert unpack_offer(packed) == ({"job": "j1", "port": 5}, b"PECB-batch")
    assert unpack_offer(b"PECB-batch") is None  # a plain batch is not an offer
    for bad in (
        packed[:10],  # truncated header
        packed[:12] + b"{not json" + b"x" * 20,
        pack_offer({}, b"")[:12] + b"[]",  # length says 2 bytes: a list, not an object
    ):
        with pytest.raises(PartyError):
            unpack_offer(bad)
