"""Drive a :class:`~psi.protocol.PsiParty` over a channel of frames.

The channel is the only transport the PSI needs: it moves opaque frames (see :mod:`psi.wire`).
Implementations: an in-memory pair for tests, and a multiprocessing ``Connection`` for two local
processes. A node later carries the same frames over Flower messages.

Sending and receiving are decoupled (a reader thread drains the channel into a queue), so two
parties that both stream large messages never deadlock on full buffers. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Protocol, TypeVar

from psi.errors import PsiAborted, PsiError
from psi.wire import Abort, Message, Role, from_wire, to_wire

__all__ = [
    "Channel",
    "ConnectionChannel",
    "MemoryChannel",
    "Party",
    "memory_channel_pair",
    "run_party",
]

R_co = TypeVar("R_co", covariant=True)


class _RunConfig(Protocol):
    @property
    def run_id(self) -> str: ...


class Party(Protocol[R_co]):
    """What :func:`run_party` drives: a protocol state machine of any PSI-family protocol."""

    @property
    def role(self) -> Role:
        """The role of this side."""
        ...

    @property
    def config(self) -> _RunConfig:
        """The run's configuration (for its run id)."""
        ...

    @property
    def done(self) -> bool:
        """Whether the run completed."""
        ...

    def start(self) -> Iterator[Message]:
        """The opening messages."""
        ...

    def receive(self, message: Message) -> Iterator[Message]:
        """The replies to one message."""
        ...

    def result(self) -> R_co:
        """What this side learned."""
        ...


_EOF = object()


class Channel(Protocol):
    """A bidirectional, ordered, reliable stream of frames."""

    def send(self, frame: bytes) -> None:
        """Send one frame; raises PsiAborted if the link is broken."""
        ...

    def recv(self, timeout: float) -> bytes:
        """Receive one frame; raises PsiAborted on timeout or a closed link."""
        ...

    def flush(self, timeout: float) -> None:
        """Wait until every frame sent so far is handed to the link; raises PsiAborted if not."""
        ...

    def close(self) -> None:
        """Close this end."""
        ...


class MemoryChannel:
    """One end of an in-memory channel (thread-safe queues)."""

    def __init__(self, inbox: queue.Queue[object], outbox: queue.Queue[object]) -> None:
        self._inbox, self._outbox = inbox, outbox
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> None:
        """Queue a frame for the other end (and keep a copy for transcript audits)."""
        self.sent.append(frame)
        self._outbox.put(frame)

    def recv(self, timeout: float) -> bytes:
        """Next frame from the other end.

        Raises:
            PsiAborted: on timeout or when the other end closed.
        """
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise PsiAborted(f"no message from the peer within {timeout:.0f} s") from None
        if item is _EOF or not isinstance(item, bytes):
            raise PsiAborted("the peer closed the channel")
        return item

    def flush(self, timeout: float) -> None:
        """Nothing to wait for: a frame is in the peer's queue when :meth:`send` returns."""

    def close(self) -> None:
        """Tell the other end that nothing more will come."""
        self._outbox.put(_EOF)


def memory_channel_pair() -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected in-memory channel ends."""
    a: queue.Queue[object] = queue.Queue()
    b: queue.Queue[object] = queue.Queue()
    return MemoryChannel(a, b), MemoryChannel(b, a)


class ConnectionChannel:
    """A channel over a ``multiprocessing`` duplex ``Connection``; threads read and write.

    Frames are written by a background thread, so the caller goes on computing while a large
    frame drains into a peer that is busy computing too (it reads only when it gets the GIL).
    At most ``send_ahead`` frames wait to be written: :meth:`send` blocks beyond that, which
    bounds memory. :meth:`flush` waits until every frame is written.
    """

    def __init__(self, conn: Connection, *, send_ahead: int = 2) -> None:
        self._conn = conn
        self._inbox: queue.Queue[object] = queue.Queue()
        self._outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=send_ahead)  # None: stop
        self._broken = threading.Event()
        self._reader = threading.Thread(target=self._read, name="psi-channel-reader", daemon=True)
        self._writer = threading.Thread(target=self._write, name="psi-channel-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    def _read(self) -> None:
        try:
            while True:
                self._inbox.put(self._conn.recv_bytes())
        except (EOFError, OSError):
            self._inbox.put(_EOF)

    def _write(self) -> None:
        while (frame := self._outbox.get()) is not None:
            try:
                self._conn.send_bytes(frame)
            except (OSError, ValueError):
                self._broken.set()
                return

    def send(self, frame: bytes) -> None:
        """Queue one frame for writing.

        Raises:
            PsiAborted: if the link is broken, or the channel was flushed.
        """
        while not self._broken.is_set():
            if not self._writer.is_alive():
                raise PsiAborted("the channel was flushed: it sends nothing more")
            try:
                self._outbox.put(frame, timeout=0.1)
                return
            except queue.Full:
                continue
        raise PsiAborted("the link to the peer is broken")

    def flush(self, timeout: float) -> None:
        """Wait until every queued frame is written; the channel sends nothing afterwards.

        Raises:
            PsiAborted: if the link broke, or the peer did not take the frames within ``timeout``.
        """
        if self._writer.is_alive() and not self._broken.is_set():
            deadline = time.monotonic() + timeout
            with contextlib.suppress(queue.Full):
                self._outbox.put(None, timeout=timeout)
            self._writer.join(max(0.0, deadline - time.monotonic()))
        if self._broken.is_set():
            raise PsiAborted("the link to the peer is broken")
        if self._writer.is_alive():
            raise PsiAborted(f"the peer took no message within {timeout:.0f} s")

    def recv(self, timeout: float) -> bytes:
        """Next frame from the peer.

        Raises:
            PsiAborted: on timeout or a closed link.
        """
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise PsiAborted(f"no message from the peer within {timeout:.0f} s") from None
        if item is _EOF or not isinstance(item, bytes):
            raise PsiAborted("the peer closed the link")
        return item

    def close(self) -> None:
        """Close the connection (call :meth:`flush` first to deliver what was queued)."""
        self._conn.close()


def run_party(
    party: Party[R_co],
    channel: Channel,
    *,
    timeout: float = 600.0,
    on_frame: Callable[[str, bytes], None] | None = None,
) -> R_co:
    """Run one party to completion over ``channel``; returns what it learned.

    ``timeout`` bounds each wait for the peer. On any error the peer is sent an abort (a code and
    a reason, never data) before the error propagates. ``on_frame("out"|"in", frame)`` observes
    the transcript (for audits and digests).

    Raises:
        PsiError: a protocol error, an abort from the peer or a timeout.
    """
    observe = on_frame or (lambda direction, frame: None)

    def send_all(messages: object) -> None:
        for message in messages:  # type: ignore[attr-defined]
            frame = to_wire(message)
            observe("out", frame)
            channel.send(frame)

    try:
        send_all(party.start())
        while not party.done:
            frame = channel.recv(timeout)
            observe("in", frame)
            send_all(party.receive(from_wire(frame)))
        channel.flush(timeout)  # the peer may still be waiting for the last frames
        return party.result()
    except PsiError as exc:
        if not isinstance(exc, PsiAborted):
            abort = Abort(party.config.run_id, party.role, 0, type(exc).__name__, str(exc))
            with contextlib.suppress(PsiError):
                channel.send(to_wire(abort))
                channel.flush(min(timeout, 10.0))
        raise
