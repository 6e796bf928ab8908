"""Run a PSI over a request/response transport in as few round trips as possible.

Flower's Message API (DESIGN.md, rule 2) is request/response: the coordinating party (the brand's
ServerApp) sends a message and the partner answers it, and each round trip costs seconds. So the
frames a party produces are batched: the coordinator sends everything it has, the responder feeds
the whole batch to its state machine and answers with everything that produced. Any PSI mode
completes in two round trips:

1. coordinator → hello; responder → hello + its masked values (or labels);
2. coordinator → its masked values + the responder's doubles; responder → the coordinator's
   doubles.

A batch is one opaque byte string (:func:`pack_frames`); the reply says whether the responder is
done, so the coordinator knows when to stop. Neither side does I/O here: ``exchange`` is given.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from psi.errors import MalformedMessage, PsiAborted
from psi.protocol import PsiParty, Stage
from psi.wire import Message, from_wire, to_wire

R = TypeVar("R", covariant=True)
T = TypeVar("T")


class RoundParty(Protocol[R]):
    """A party state machine the rounds can drive: a PSI party or an aggregate party."""

    @property
    def done(self) -> bool:
        """True once the party has its result."""

    def start(self) -> Iterator[Message]:
        """The party's first messages."""

    def receive(self, message: Message) -> Iterator[Message]:
        """The messages one incoming message produces."""

    def result(self) -> R:
        """The party's result (once done)."""


__all__ = ["Batch", "PsiResponder", "RoundParty", "drive_rounds", "pack_frames", "unpack_frames"]

_BATCH_MAGIC = b"PECB"
_HEAD = struct.Struct(">4sBI")  # magic, done flag, frame count
_LEN = struct.Struct(">Q")


@dataclass(frozen=True)
class Batch:
    """Frames travelling together in one transport message, and whether the sender is done."""

    frames: tuple[bytes, ...]
    done: bool = False


def pack_frames(batch: Batch) -> bytes:
    """Encode a batch as one byte string."""
    parts = [_HEAD.pack(_BATCH_MAGIC, int(batch.done), len(batch.frames))]
    for frame in batch.frames:
        parts.append(_LEN.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def unpack_frames(data: bytes) -> Batch:
    """Decode a batch.

    Raises:
        MalformedMessage: bad magic, lengths that overrun the data, or trailing bytes.
    """
    if len(data) < _HEAD.size:
        raise MalformedMessage("batch shorter than its header")
    magic, done, count = _HEAD.unpack_from(data)
    if magic != _BATCH_MAGIC or done not in (0, 1):
        raise MalformedMessage("not a PEC frame batch")
    offset, frames = _HEAD.size, []
    for _ in range(count):
        if offset + _LEN.size > len(data):
            raise MalformedMessage("batch truncated")
        (size,) = _LEN.unpack_from(data, offset)
        offset += _LEN.size
        if offset + size > len(data):
            raise MalformedMessage("batch truncated")
        frames.append(data[offset : offset + size])
        offset += size
    if offset != len(data):
        raise MalformedMessage("trailing bytes after the batch")
    return Batch(tuple(frames), bool(done))


class PsiResponder:
    """The passive side: answers each batch from the coordinator with the frames it produced.

    Lives in the partner's own process between round trips (the transport's per-message code is a
    thin relay to it).
    """

    def __init__(self, party: PsiParty) -> None:
        self.party = party

    def answer(self, request: bytes) -> bytes:
        """Feed one batch to the party; returns the packed reply batch.

        Raises:
            psi.errors.ProtocolError: any protocol violation in the batch.
        """
        incoming = unpack_frames(request)
        out: list[bytes] = []
        if self.party.stage is Stage.NEW:
            out.extend(to_wire(m) for m in self.party.start())
        for frame in incoming.frames:
            out.extend(to_wire(m) for m in self.party.receive(from_wire(frame)))
        return pack_frames(Batch(tuple(out), self.party.done))


def drive_rounds(
    party: RoundParty[T],
    exchange: Callable[[bytes], bytes],
    *,
    max_rounds: int = 8,
    on_round: Callable[[int, int, int], None] | None = None,
) -> T:
    """Run the coordinating party, one ``exchange(request) -> reply`` per round trip.

    ``on_round(round, bytes_sent, bytes_received)`` observes each round trip.

    Raises:
        PsiAborted: the rounds stop making progress or exceed ``max_rounds``.
        psi.errors.ProtocolError: a violation in the responder's frames.
    """
    pending = [to_wire(m) for m in party.start()]
    peer_done = False
    for round_no in range(1, max_rounds + 1):
        request = pack_frames(Batch(tuple(pending), party.done))
        reply = unpack_frames(exchange(request))
        if on_round is not None:
            on_round(round_no, len(request), sum(len(f) for f in reply.frames))
        pending = []
        for frame in reply.frames:
            pending.extend(to_wire(m) for m in party.receive(from_wire(frame)))
        peer_done = reply.done
        if party.done and peer_done and not pending:
            return party.result()
        if not pending and not reply.frames:
            raise PsiAborted("the run stalled: neither side has anything to send")
    raise PsiAborted(f"the run did not finish within {max_rounds} round trips")
