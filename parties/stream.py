"""A direct, mutually authenticated stream for one job, offered and bound over Flower.

Each Flower message costs seconds (docs/flower-deployment.md); a training job needs dozens of
round trips. So a job may move its remaining messages to a direct TLS stream between the brand's
ServerApp and the partner's own process, with the **partner dialing out** (as its SuperNode
does):

1. The brand opens a listening socket and sends, *as a Flower message of the job's run*, an
   offer: its address, a fresh self-signed certificate (ECDSA P-256, made for this job only) and
   a random 256-bit token.
2. The partner's process answers, over Flower, with its own fresh certificate, then dials the
   address. TLS 1.3 with both certificates pinned (each side trusts exactly the certificate the
   other sent in this run, nothing else); the partner's first frame is the token.
3. The brand accepts one connection within a deadline, checks the token, closes the listener,
   and sends every further request of the job over the stream (length-prefixed frames); the
   partner answers each with its job object, exactly as through the relay.

The stream is as authentic as the Flower channel that carried the certificates (SuperNode
authentication and TLS in production): whoever did not take part in this run's messages cannot
complete the handshake, and the token binds the connection to this offer. The keys live in memory
(they touch disk only in a 0700 temporary folder while the TLS context loads them).
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import json
import os
import secrets
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from parties.errors import PartyError

__all__ = [
    "BatchesOnStream",
    "StreamExchange",
    "StreamListener",
    "dial",
    "ephemeral_certificate",
    "pack_offer",
    "unpack_offer",
]

MAX_FRAME = 1 << 31
_LENGTH = struct.Struct(">Q")
_OFFER_MAGIC = b"PECOFFER"
_OFFER_HEAD = struct.Struct(">8sI")
_MAX_OFFER_HEADER = 1 << 16


def pack_offer(header: Mapping[str, object], payload: bytes) -> bytes:
    """A request (or reply) that also carries a stream offer (or its acceptance).

    A job whose protocol has its own framing (a PSI batch) sends its first request wrapped with
    the offer, so moving to the stream costs no Flower round trip of its own.
    """
    head = json.dumps(header, separators=(",", ":")).encode()
    return _OFFER_HEAD.pack(_OFFER_MAGIC, len(head)) + head + payload


def unpack_offer(data: bytes) -> tuple[dict[str, object], bytes] | None:
    """The header and the payload of :func:`pack_offer`'s bytes; None for anything else.

    Raises:
        PartyError: the bytes announce an offer but its header is malformed.
    """
    if not data.startswith(_OFFER_MAGIC):
        return None
    if len(data) < _OFFER_HEAD.size:
        raise PartyError("truncated stream offer")
    _, size = _OFFER_HEAD.unpack_from(data)
    end = _OFFER_HEAD.size + size
    if size > _MAX_OFFER_HEADER or end > len(data):
        raise PartyError("malformed stream offer")
    try:
        header = json.loads(data[_OFFER_HEAD.size : end])
    except ValueError as exc:
        raise PartyError("malformed stream offer") from exc
    if not isinstance(header, dict):
        raise PartyError("malformed stream offer")
    return header, data[end:]


def ephemeral_certificate() -> tuple[bytes, bytes]:
    """A fresh self-signed certificate and its private key (PEM), valid for one day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pec-job-stream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class BatchesOnStream(abc.ABC):
    """A relay job whose first request may carry a stream offer (:func:`pack_offer`).

    Such a request is answered like any other (:meth:`answer_batch`), then this side dials the
    brand (:func:`dial`: later requests arrive on the stream and are answered the same way) and
    the reply goes back over Flower wrapped with this side's fresh certificate. The relay target
    sets ``on_finished``, called when the job ends on the stream, and ``timeout``.
    """

    job_id: str
    timeout: float = 600.0
    on_finished: Callable[[BaseException | None], None] | None = None
    _streaming: bool = False

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """True once the job's protocol has finished on this side."""

    @abc.abstractmethod
    def answer_batch(self, body: bytes) -> bytes:
        """The reply to one request of the job's own protocol."""

    def answer(self, body: bytes) -> bytes:
        """The reply to one request, or to an offer carrying one.

        Raises:
            PartyError: an offer for another job, or one this job cannot take now.
            PecError: whatever :meth:`answer_batch` raises (then no stream is dialed).
        """
        offer = unpack_offer(body)
        if offer is None:
            return self.answer_batch(body)
        header, request = offer
        if header.get("job") != self.job_id:
            raise PartyError("stream offer for another job")
        if self._streaming or self.on_finished is None:
            raise PartyError("this job cannot move to a stream now")
        self._streaming = True
        reply = self.answer_batch(request)
        cert, key = ephemeral_certificate()
        dial(header, cert, key, self.answer_batch, done=lambda: self.done,
             finished=self.on_finished, timeout=self.timeout)  # fmt: skip
        return pack_offer({"job": self.job_id, "cert": cert.decode("ascii")}, reply)


def _context(server: bool, cert: bytes, key: bytes, peer_cert: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # the peer is pinned by its certificate, not a name
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cadata=peer_cert.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise PartyError("the peer's stream certificate is not a certificate") from exc
    with tempfile.TemporaryDirectory(prefix="pec-stream-") as folder:
        os.chmod(folder, 0o700)
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        cert_file.write_bytes(cert)
        context.load_cert_chain(cert_file, key_file)
    return context


def send_frame(sock: ssl.SSLSocket, data: bytes) -> None:
    """One length-prefixed frame."""
    sock.sendall(_LENGTH.pack(len(data)) + data)


def _read_exact(sock: ssl.SSLSocket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise PartyError("the job stream closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: ssl.SSLSocket) -> bytes:
    """One length-prefixed frame.

    Raises:
        PartyError: the stream closed or announced an oversized frame.
    """
    (size,) = _LENGTH.unpack(_read_exact(sock, _LENGTH.size))
    if size > MAX_FRAME:
        raise PartyError("oversized frame on the job stream")
    return _read_exact(sock, size)


class StreamExchange:
    """The brand's end of an accepted stream: one request, one reply."""

    def __init__(self, sock: ssl.SSLSocket, timeout: float) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.round_trips = 0

    def __call__(self, request: bytes) -> bytes:
        """Send ``request``; return the reply.

        Raises:
            PartyError: the stream broke or timed out.
        """
        try:
            send_frame(self.sock, request)
            reply = recv_frame(self.sock)
        except (OSError, ssl.SSLError) as exc:
            raise PartyError(f"the job stream failed: {type(exc).__name__}") from exc
        self.round_trips += 1
        return reply

    def close(self) -> None:
        """Close the stream (the partner sees the end and stops serving it)."""
        with contextlib.suppress(OSError):
            self.sock.close()


class StreamListener:
    """The brand's listening socket for one job's stream."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cert, self._key = ephemeral_certificate()
        self.token = secrets.token_hex(32)
        self._socket = socket.create_server((host, port))
        self.host, self.port = host, int(self._socket.getsockname()[1])

    def offer(self) -> dict[str, str | int]:
        """What the brand sends over Flower: address, certificate, token."""
        return {
            "host": self.host,
            "port": self.port,
            "cert": self.cert.decode("ascii"),
            "token": self.token,
        }

    def accept(self, partner_cert: bytes, timeout: float, io_timeout: float) -> StreamExchange:
        """Accept the partner's connection (pinned certificate, then the token).

        Raises:
            PartyError: nobody connected in time, the handshake failed, or the token is wrong.
        """
        context = _context(True, self.cert, self._key, partner_cert)
        self._socket.settimeout(timeout)
        try:
            raw, _ = self._socket.accept()
            raw.settimeout(timeout)
            sock = context.wrap_socket(raw, server_side=True)
            token = recv_frame(sock)
        except (OSError, ssl.SSLError) as exc:
            raise PartyError(f"the partner's stream did not connect: {type(exc).__name__}") from exc
        finally:
            self._socket.close()
        if not secrets.compare_digest(token, self.token.encode()):
            sock.close()
            raise PartyError("the stream's token does not match this job's offer")
        return StreamExchange(sock, io_timeout)

    def close(self) -> None:
        """Stop listening."""
        self._socket.close()


def dial(
    offer: Mapping[str, object],
    cert: bytes,
    key: bytes,
    answer: Callable[[bytes], bytes],
    *,
    done: Callable[[], bool],
    finished: Callable[[BaseException | None], None],
    timeout: float,
) -> threading.Thread:
    """The partner's end: connect to the offer in a thread and answer requests until ``done``.

    ``finished(None)`` is called when the job completed, ``finished(error)`` when it failed.
    """

    def run() -> None:
        error: BaseException | None = None
        try:
            context = _context(False, cert, key, str(offer["cert"]).encode("ascii"))
            address = (str(offer["host"]), int(str(offer["port"])))
            with (
                socket.create_connection(address, timeout=timeout) as raw,
                context.wrap_socket(raw) as sock,
            ):
                sock.settimeout(timeout)
                send_frame(sock, str(offer["token"]).encode())
                while not done():
                    send_frame(sock, answer(recv_frame(sock)))
        except BaseException as exc:  # reported to the relay server, never to the peer
            error = exc
        finished(error)

    thread = threading.Thread(target=run, name="pec-job-stream", daemon=True)
    thread.start()
    return thread
