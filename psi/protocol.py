"""ECDH-PSI as two state machines: messages in, messages out, no I/O.

Each party hashes its identifiers to Curve25519 and masks them with a fresh secret scalar; the
peer masks them again. Masking commutes, so a value both parties hold ends up with the same doubly
masked form on both sides, and nothing else can be compared. See ``docs/threat-model.md`` for what
each mode reveals to whom.

Modes (:class:`Reveal`):

* ``left`` / ``right`` / ``both``: the named side(s) learn which of their own rows matched. Each
  side sends, per key slot, its *distinct* valid values, masked, in a secret random order; the
  peer returns them doubly masked in the same order only if the sender is to learn rows.
* ``count``: both sides learn only how many of their records matched (any key, and per key).
  Records (a row's values in every slot; a random dummy point where a key is missing) are
  returned doubly masked only after a global shuffle, so no result maps back to a row.
* labeled (``left`` only): the right side attaches payload columns. The left side's masked values
  come back doubly masked; the left side removes its own mask (its key is generated invertible)
  and obtains ``[b]H(x)``, a PRF of its value under the right side's key. The right side sends,
  per distinct value, a truncated tag and a ChaCha20-Poly1305 ciphertext of the payload, both
  derived from the same PRF of its own values; only matched values open.

Every message carries the run id, the sender's role and a sequence number; a message from the
wrong run or sender, a repeated or skipped sequence number, a chunk out of order or a message that
the current stage does not expect raises :class:`~psi.errors.UnexpectedMessage`. The state
machine refuses further use once it has failed or completed.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pec.crypto.masking import POINT_BYTES, InvalidPoint, MaskingKey
from psi.batch import BatchEngine, InlineEngine
from psi.errors import (
    HandshakeMismatch,
    InvalidPeerPoint,
    ProtocolError,
    PsiAborted,
    PsiError,
    UnexpectedMessage,
)
from psi.wire import (
    PROTOCOL,
    Abort,
    Hello,
    Labels,
    Message,
    Points,
    PointsKind,
    Reveal,
    Role,
)

__all__ = [
    "PartyInput",
    "PsiConfig",
    "PsiParty",
    "PsiResult",
    "Reveal",
    "Stage",
    "truncation_width",
]

#: Statistical security of the truncated comparison: P(any false match) <= 2^-SIGMA.
SIGMA = 40
_TAG_PERSON = b"pec/psi-tag/v1"
_KEY_PERSON = b"pec/psi-key/v1"
_SALT_PERSON = b"pec/psi-salt/v1"
_ALIGN_PERSON = b"pec/psi-align/v1"
_NONCE = bytes(12)  # each payload key encrypts exactly one message


class Stage(Enum):
    """Lifecycle of a party."""

    NEW = "new"
    HELLO_SENT = "hello-sent"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def truncation_width(left_total: int, right_total: int, sigma: int = SIGMA) -> int:
    """Bytes of each doubly masked value that are compared.

    A false match needs two distinct values whose truncations collide; over all pairs the
    probability is at most ``left_total * right_total * 2^(-8w)``. The width is the smallest
    ``w`` (at least 8, at most 32 bytes) that keeps this at or below ``2^-sigma``.
    """
    pairs = max(1, left_total) * max(1, right_total)
    return min(POINT_BYTES, max(8, math.ceil((math.log2(pairs) + sigma) / 8)))


@dataclass(frozen=True)
class PsiConfig:
    """What both parties agree on before a run. Checked against the peer in the handshake."""

    run_id: str
    reveal: Reveal
    kinds: tuple[str, ...]
    rules: str
    labeled: bool = False
    chunk_size: int = 65_536
    align: bool = False

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ValueError("a PSI run needs at least one key")
        if self.align and self.reveal is not Reveal.BOTH:
            raise ValueError("alignment ids need reveal=both: both sides must learn their rows")
        if self.labeled and self.reveal is not Reveal.LEFT:
            raise ValueError("labeled PSI (payloads) needs reveal=left: only the left side learns")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be positive")


@dataclass(frozen=True)
class PartyInput:
    """A party's own prepared data. Never leaves the party.

    ``slot_values[k]`` are the distinct valid normalized values of key slot ``k`` (UTF-8);
    ``row_codes[r, k]`` is the index of row ``r``'s value in ``slot_values[k]``, or -1 where the
    row has no valid key in that slot. ``payloads[k][i]`` (labeled PSI, right side only) is the
    serialized payload for ``slot_values[k][i]``.
    """

    slot_values: tuple[tuple[bytes, ...], ...]
    row_codes: np.ndarray
    payloads: tuple[tuple[bytes, ...], ...] | None = None
    payload_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.row_codes.ndim != 2 or self.row_codes.shape[1] != len(self.slot_values):
            raise ValueError("row_codes must have one column per key slot")
        if self.payloads is not None and [len(p) for p in self.payloads] != [
            len(v) for v in self.slot_values
        ]:
            raise ValueError("payloads must have one entry per distinct value and slot")

    @property
    def rows(self) -> int:
        """Rows of the party's table."""
        return int(self.row_codes.shape[0])


@dataclass(frozen=True)
class PsiResult:
    """What one party learned. Fields a mode does not reveal are None."""

    role: Role
    reveal: Reveal
    rows: int
    matched_rows: np.ndarray | None
    count: int | None
    per_key: tuple[int, ...] | None
    payloads: dict[int, list[bytes]] | None = None
    payload_columns: tuple[str, ...] = ()
    tag_collisions: int = 0
    match_ids: dict[int, bytes] | None = None

    @property
    def intersection(self) -> int | None:
        """Matched rows (row modes) or matched records (count mode)."""
        if self.matched_rows is not None:
            return int(self.matched_rows.size)
        return self.count


ProgressFn = Callable[[str, int, int], None]


def check_envelope(message: Message, run_id: str, peer: Role, expected_seq: int) -> None:
    """Refuse a message from another run or sender, or with an unexpected sequence number.

    Raises:
        UnexpectedMessage: naming what is wrong (replayed, out of order, foreign).
    """
    if message.run_id != run_id:
        raise UnexpectedMessage("message belongs to another run")
    if message.sender is not peer:
        raise UnexpectedMessage(f"message claims to come from {message.sender.value}")
    if message.seq != expected_seq:
        kind = "replayed" if message.seq < expected_seq else "out of order"
        raise UnexpectedMessage(f"message {kind}: sequence {message.seq}, expected {expected_seq}")


def random_permutation(n: int, randbytes: Callable[[int], bytes]) -> np.ndarray:
    """A uniformly random permutation from a cryptographic random source (sort by random keys)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.frombuffer(randbytes(8 * n), dtype=np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


def _rows_hit(column: np.ndarray, matched_unique: np.ndarray) -> np.ndarray:
    """Rows whose value in this slot (an index into the distinct values, -1 if none) matched."""
    hit = np.zeros(column.shape[0], dtype=bool)
    valid = column >= 0
    hit[valid] = matched_unique[column[valid]]
    return hit


def split_records(buffer: bytes, width: int) -> list[bytes]:
    return [buffer[i : i + width] for i in range(0, len(buffer), width)]


def _prf_tag(prf: bytes, salt: bytes, width: int) -> bytes:
    return hashlib.blake2b(prf, digest_size=32, key=salt, person=_TAG_PERSON).digest()[:width]


def _prf_key(prf: bytes, salt: bytes) -> bytes:
    return hashlib.blake2b(prf, digest_size=32, key=salt, person=_KEY_PERSON).digest()


@dataclass
class _Incoming:
    """Progress of one stream of chunks (per slot): next chunk index and values received."""

    expected: int
    received: int = 0
    next_chunk: int = 0

    @property
    def complete(self) -> bool:
        return self.received >= self.expected


@dataclass
class _State:
    salt: bytes = b""
    width: int = POINT_BYTES
    peer_sizes: tuple[int, ...] = ()
    peer_payload_width: int = 0
    peer_payload_columns: tuple[str, ...] = ()
    tag_width: int = 0
    # my values, in the order I sent them (index into slot_values, or record index)
    my_order: list[np.ndarray] = field(default_factory=list)
    my_doubles: list[list[bytes]] = field(default_factory=list)
    peer_sets: list[set[bytes]] = field(default_factory=list)
    peer_masked_in: list[_Incoming] = field(default_factory=list)
    my_double_in: list[_Incoming] = field(default_factory=list)
    labels_in: list[_Incoming] = field(default_factory=list)
    labels: list[dict[bytes, bytes]] = field(default_factory=list)
    count_buffer: list[bytes] = field(default_factory=list)
    records: np.ndarray | None = None


class PsiParty:
    """One side of an ECDH-PSI run.

    Drive it with :meth:`start` and :meth:`receive`; both return iterators of outgoing messages
    that must be exhausted (and sent, in order) before the next call. The heavy work happens
    while iterating, chunk by chunk, so memory stays bounded and sending overlaps computing.
    """

    def __init__(
        self,
        role: Role,
        config: PsiConfig,
        data: PartyInput,
        *,
        engine: BatchEngine | None = None,
        key: MaskingKey | None = None,
        randbytes: Callable[[int], bytes] = os.urandom,
        progress: ProgressFn | None = None,
    ) -> None:
        if len(data.slot_values) != len(config.kinds):
            raise ValueError("the input has a different number of key slots than the config")
        if config.labeled and role is Role.RIGHT and data.payloads is None:
            raise ValueError("the right side of a labeled PSI needs payloads")
        self.role = role
        self.config = config
        self._data = data
        self._engine = engine or InlineEngine()
        self._randbytes = randbytes
        invertible = config.labeled and role is Role.LEFT
        self._key = key or MaskingKey.generate(invertible=invertible, randbytes=randbytes)
        self._unblind = self._key.inverse() if invertible else None
        self._progress = progress or (lambda stage, done, total: None)
        self._stage = Stage.NEW
        self._salt_share = randbytes(32)
        self._seq_out = 0
        self._seq_in = 0
        self._busy = False
        self._sent_all = False
        self._state = _State()
        self._count_mode = config.reveal is Reveal.COUNT
        # labeled PSI unblinds, which needs points on the curve itself (see pec.crypto.masking)
        self._curve_only = config.labeled
        self._result: PsiResult | None = None
        if self._count_mode:
            self._state.records = self._build_records()

    # -- public surface -------------------------------------------------------------------

    @property
    def stage(self) -> Stage:
        """Where the party is in its lifecycle."""
        return self._stage

    @property
    def done(self) -> bool:
        """True once everything was sent and received and the result is available."""
        return self._stage is Stage.DONE

    def start(self) -> Iterator[Message]:
        """Open the run: yields this party's hello.

        Raises:
            UnexpectedMessage: if called twice.
        """
        if self._stage is not Stage.NEW:
            raise UnexpectedMessage(f"start() called in stage {self._stage.value}")
        self._stage = Stage.HELLO_SENT
        return iter([self._hello()])

    def receive(self, message: Message) -> Iterator[Message]:
        """Take one message from the peer; returns the messages to send in reply.

        Raises:
            UnexpectedMessage: wrong run, sender, sequence number, stage or chunk order.
            HandshakeMismatch: the peer's hello disagrees with this party's config.
            InvalidPeerPoint: the peer sent a value that is not a valid curve point.
            ProtocolError: any other violation; the party is failed afterwards.
        """
        if self._busy:
            raise PsiError("the previous reply iterator was not exhausted")
        if isinstance(message, Abort):
            self._stage = Stage.FAILED
            if message.run_id != self.config.run_id or message.sender is not self.role.peer:
                # an abort can come at any point (it carries no sequence number), but only from
                # the peer of this run
                raise UnexpectedMessage("an abort from another run or sender")
            raise PsiAborted(f"the peer aborted the run ({message.code}): {message.reason}")
        if self._stage in (Stage.DONE, Stage.FAILED, Stage.NEW):
            raise UnexpectedMessage(f"message received in stage {self._stage.value}")
        try:
            self._check_envelope(message)
            replies = self._dispatch(message)
        except (ProtocolError, InvalidPoint) as exc:
            self._stage = Stage.FAILED
            if isinstance(exc, ProtocolError):
                raise
            raise InvalidPeerPoint(f"the peer sent an invalid point: {exc}") from exc
        return self._guarded(replies)

    def result(self) -> PsiResult:
        """What this party learned.

        Raises:
            PsiError: before the run is done.
        """
        if self._stage is not Stage.DONE or self._result is None:
            raise PsiError(f"no result in stage {self._stage.value}")
        return self._result

    # -- envelope and dispatch ------------------------------------------------------------

    def _guarded(self, replies: Iterator[Message]) -> Iterator[Message]:
        self._busy = True
        try:
            yield from replies
        except (ProtocolError, InvalidPoint) as exc:
            self._stage = Stage.FAILED
            if isinstance(exc, ProtocolError):
                raise
            raise InvalidPeerPoint(f"the peer sent an invalid point: {exc}") from exc
        finally:
            self._busy = False
        self._maybe_finish()

    def _check_envelope(self, message: Message) -> None:
        check_envelope(message, self.config.run_id, self.role.peer, self._seq_in)
        if isinstance(message, Hello) != (self._stage is Stage.HELLO_SENT):
            raise UnexpectedMessage(
                f"{type(message).__name__.lower()} not expected in stage {self._stage.value}"
            )
        self._seq_in += 1

    def _dispatch(self, message: Message) -> Iterator[Message]:
        if isinstance(message, Hello):
            return self._on_hello(message)
        if isinstance(message, Abort):  # pragma: no cover - handled in receive()
            raise PsiAborted(message.reason)
        if isinstance(message, Points) and message.kind is PointsKind.MASKED:
            return self._on_peer_masked(message)
        if isinstance(message, Points):
            return self._on_my_double(message)
        if isinstance(message, Labels):
            return self._on_labels(message)
        raise UnexpectedMessage(f"{type(message).__name__} does not belong to this protocol")

    def _next_seq(self) -> int:
        seq = self._seq_out
        self._seq_out += 1
        return seq

    # -- handshake --------------------------------------------------------------------------

    def _my_sizes(self) -> tuple[int, ...]:
        if self._count_mode:
            assert self._state.records is not None
            return (int(self._state.records.shape[0]),)
        return tuple(len(v) for v in self._data.slot_values)

    def _hello(self) -> Hello:
        return Hello(
            run_id=self.config.run_id,
            sender=self.role,
            seq=self._next_seq(),
            protocol=PROTOCOL,
            rules=self.config.rules,
            reveal=self.config.reveal.value,
            kinds=self.config.kinds,
            labeled=self.config.labeled,
            align=self.config.align,
            salt_share=self._salt_share,
            sizes=self._my_sizes(),
            payload_columns=self._data.payload_columns if self.role is Role.RIGHT else (),
        )

    def _on_hello(self, hello: Hello) -> Iterator[Message]:
        for what, ours, theirs in (
            ("protocol version", PROTOCOL, hello.protocol),
            ("normalization rules", self.config.rules, hello.rules),
            ("reveal mode", self.config.reveal.value, hello.reveal),
            ("key kinds", self.config.kinds, hello.kinds),
            ("labeled mode", self.config.labeled, hello.labeled),
            ("alignment", self.config.align, hello.align),
        ):
            if ours != theirs:
                raise HandshakeMismatch(f"the peer uses a different {what}: {theirs!r} != {ours!r}")
        expected_sizes = 1 if self._count_mode else len(self.config.kinds)
        if len(hello.sizes) != expected_sizes or len(hello.salt_share) != 32:
            raise HandshakeMismatch("the peer's hello has the wrong number of sizes or salt bytes")
        shares = (
            (self._salt_share, hello.salt_share)
            if self.role is Role.LEFT
            else (hello.salt_share, self._salt_share)
        )
        st = self._state
        st.salt = hashlib.blake2b(
            self.config.run_id.encode() + shares[0] + shares[1], digest_size=32, person=_SALT_PERSON
        ).digest()
        st.peer_sizes = hello.sizes
        st.peer_payload_columns = hello.payload_columns
        mine = self._my_sizes()
        arity = len(self.config.kinds) if self._count_mode else 1
        left, right = (mine, hello.sizes) if self.role is Role.LEFT else (hello.sizes, mine)
        st.width = (
            POINT_BYTES
            if self.config.labeled
            else truncation_width(sum(left) * arity, sum(right) * arity)
        )
        # labeled PSI compares truncated tags, not doubles: both sides derive the same width
        st.tag_width = truncation_width(sum(left), sum(right))
        slots = 1 if self._count_mode else len(self.config.kinds)
        st.peer_sets = [set() for _ in range(len(self.config.kinds))]
        st.my_doubles = [[] for _ in range(slots)]
        learns = self.config.reveal.learns_anything(self.role)
        if self.config.labeled:
            if self.role is Role.LEFT:
                st.labels_in = [_Incoming(n) for n in hello.sizes]
                st.labels = [{} for _ in hello.sizes]
                st.my_double_in = [_Incoming(n) for n in mine]
            else:
                st.peer_masked_in = [_Incoming(n) for n in hello.sizes]
        else:
            st.peer_masked_in = [_Incoming(n) for n in hello.sizes]
            st.my_double_in = [_Incoming(n) for n in mine] if learns else []
        self._stage = Stage.RUNNING
        if self.config.labeled and self.role is Role.RIGHT:
            return self._send_labels()
        return self._send_masked()

    # -- my own values ------------------------------------------------------------------------

    def _slot_tag(self, slot: int) -> bytes:
        return f"{PROTOCOL}|slot={slot}|kind={self.config.kinds[slot]}".encode()

    def _build_records(self) -> np.ndarray:
        codes = self._data.row_codes
        usable = codes[(codes >= 0).any(axis=1)]
        if usable.shape[0] == 0:
            return np.zeros((0, codes.shape[1]), dtype=np.int64)
        return np.unique(usable, axis=0)

    def _send_masked(self) -> Iterator[Message]:
        st, scalar, chunk = self._state, self._key.raw_scalar(), self.config.chunk_size
        if self._count_mode:
            assert st.records is not None
            records = st.records
            order = random_permutation(records.shape[0], self._randbytes)
            st.my_order = [order]
            k = len(self.config.kinds)
            total = records.shape[0]
            self._progress("mask own", 0, total)  # the stage starts (its bar and clock)
            for index, start in enumerate(range(0, total, chunk)):
                rows = records[order[start : start + chunk]]
                per_slot = []
                for slot in range(k):
                    values: list[bytes] = [
                        self._data.slot_values[slot][c] if c >= 0 else self._randbytes(32)
                        for c in rows[:, slot]
                    ]
                    # a missing key becomes a random value: indistinguishable, never matches
                    masked = self._engine.hash_and_mask(
                        scalar, st.salt, self._slot_tag(slot), values, self._curve_only
                    )
                    per_slot.append(split_records(masked, POINT_BYTES))
                body = b"".join(b"".join(vals) for vals in zip(*per_slot, strict=True))
                self._progress("mask own", start + len(rows), total)
                yield Points(
                    run_id=self.config.run_id,
                    sender=self.role,
                    seq=self._next_seq(),
                    kind=PointsKind.MASKED,
                    slot=-1,
                    chunk=index,
                    count=len(rows),
                    arity=k,
                    width=POINT_BYTES,
                    body=body,
                )
        else:
            total = sum(len(v) for v in self._data.slot_values)
            done = 0
            self._progress("mask own", 0, total)
            for slot, distinct in enumerate(self._data.slot_values):
                order = random_permutation(len(distinct), self._randbytes)
                st.my_order.append(order)
                tag = self._slot_tag(slot)
                for index, start in enumerate(range(0, len(distinct), chunk)):
                    picked = [distinct[i] for i in order[start : start + chunk]]
                    body = self._engine.hash_and_mask(
                        scalar, st.salt, tag, picked, self._curve_only
                    )
                    done += len(picked)
                    self._progress("mask own", done, total)
                    yield Points(
                        run_id=self.config.run_id,
                        sender=self.role,
                        seq=self._next_seq(),
                        kind=PointsKind.MASKED,
                        slot=slot,
                        chunk=index,
                        count=len(picked),
                        arity=1,
                        width=POINT_BYTES,
                        body=body,
                    )
        self._sent_all = True

    def _send_labels(self) -> Iterator[Message]:
        st, scalar, chunk = self._state, self._key.raw_scalar(), self.config.chunk_size
        payloads = self._data.payloads
        assert payloads is not None
        longest = max((len(p) for slot in payloads for p in slot), default=0)
        plain_width = 4 + longest
        ct_width = plain_width + 16
        tag_width = st.tag_width
        total = sum(len(v) for v in self._data.slot_values)
        done = 0
        self._progress("mask own", 0, total)
        for slot, values in enumerate(self._data.slot_values):
            order = random_permutation(len(values), self._randbytes)
            tag = self._slot_tag(slot)
            aad = f"{self.config.run_id}|{slot}".encode()
            for index, start in enumerate(range(0, len(values), chunk)):
                picked = order[start : start + chunk]
                prfs = split_records(
                    self._engine.hash_and_mask(
                        scalar, st.salt, tag, [values[i] for i in picked], curve_only=True
                    ),
                    POINT_BYTES,
                )
                body = bytearray()
                for i, prf in zip(picked, prfs, strict=True):
                    payload = payloads[slot][i]
                    plain = len(payload).to_bytes(4, "big") + payload.ljust(longest, b"\0")
                    body += _prf_tag(prf, st.salt, tag_width)
                    body += ChaCha20Poly1305(_prf_key(prf, st.salt)).encrypt(_NONCE, plain, aad)
                done += len(picked)
                self._progress("mask own", done, total)
                yield Labels(
                    run_id=self.config.run_id,
                    sender=self.role,
                    seq=self._next_seq(),
                    slot=slot,
                    chunk=index,
                    count=len(picked),
                    tag_width=tag_width,
                    ct_width=ct_width,
                    body=bytes(body),
                )
        self._sent_all = True

    # -- the peer's values ----------------------------------------------------------------

    def _advance(
        self, streams: list[_Incoming], slot: int, chunk: int, count: int, what: str
    ) -> None:
        index = 0 if slot == -1 else slot
        if not 0 <= index < len(streams) or (slot == -1) != self._count_mode:
            raise UnexpectedMessage(f"{what} for unknown slot {slot}")
        stream = streams[index]
        if chunk != stream.next_chunk:
            raise UnexpectedMessage(
                f"{what} chunk {chunk} out of order, expected {stream.next_chunk}"
            )
        if stream.received + count > stream.expected or count == 0:
            raise UnexpectedMessage(f"{what} carries more values than announced")
        stream.next_chunk += 1
        stream.received += count

    def _on_peer_masked(self, msg: Points) -> Iterator[Message]:
        st = self._state
        if not st.peer_masked_in:
            raise UnexpectedMessage("masked values not expected in this mode")
        arity = len(self.config.kinds) if self._count_mode else 1
        if msg.width != POINT_BYTES or msg.arity != arity:
            raise UnexpectedMessage("masked values have the wrong width or arity")
        self._advance(st.peer_masked_in, msg.slot, msg.chunk, msg.count, "masked values")
        stream = st.peer_masked_in[max(msg.slot, 0)]
        if stream.received == msg.count:  # the first chunk: the stage starts
            self._progress("mask peer", 0, stream.expected)
        doubled = self._engine.mask_and_truncate(
            self._key.raw_scalar(), msg.body, st.width, self._curve_only
        )
        self._progress("mask peer", stream.received, stream.expected)
        learns = self.config.reveal.learns_anything(self.role)
        if self._count_mode:
            values = split_records(doubled, st.width)
            if learns:
                for i, value in enumerate(values):
                    st.peer_sets[i % arity].add(value)
            st.count_buffer.append(doubled)
            if stream.complete:
                yield from self._return_shuffled_records()
            return
        if learns and not self.config.labeled:
            st.peer_sets[msg.slot].update(split_records(doubled, st.width))
        if self.config.labeled or self.config.reveal.learns_rows(self.role.peer):
            yield Points(
                run_id=self.config.run_id,
                sender=self.role,
                seq=self._next_seq(),
                kind=PointsKind.DOUBLE,
                slot=msg.slot,
                chunk=msg.chunk,
                count=msg.count,
                arity=1,
                width=st.width,
                body=doubled,
            )

    def _return_shuffled_records(self) -> Iterator[Message]:
        st = self._state
        k = len(self.config.kinds)
        record_width = st.width * k
        joined = b"".join(st.count_buffer)
        st.count_buffer = []
        records = split_records(joined, record_width)
        order = random_permutation(len(records), self._randbytes)
        chunk = self.config.chunk_size
        for index, start in enumerate(range(0, len(records), chunk)):
            picked = [records[i] for i in order[start : start + chunk]]
            yield Points(
                run_id=self.config.run_id,
                sender=self.role,
                seq=self._next_seq(),
                kind=PointsKind.DOUBLE,
                slot=-1,
                chunk=index,
                count=len(picked),
                arity=k,
                width=st.width,
                body=b"".join(picked),
            )

    def _on_my_double(self, msg: Points) -> Iterator[Message]:
        st = self._state
        if not st.my_double_in:
            raise UnexpectedMessage("doubly masked values not expected: this side learns nothing")
        arity = len(self.config.kinds) if self._count_mode else 1
        if msg.width != st.width or msg.arity != arity:
            raise UnexpectedMessage("doubly masked values have the wrong width or arity")
        self._advance(st.my_double_in, msg.slot, msg.chunk, msg.count, "doubly masked values")
        index = max(msg.slot, 0)
        if self.config.labeled:
            assert self._unblind is not None
            prfs = self._engine.mask_and_truncate(
                self._unblind.raw_scalar(), msg.body, POINT_BYTES, True
            )
            st.my_doubles[index].extend(split_records(prfs, POINT_BYTES))
        else:
            st.my_doubles[index].extend(split_records(msg.body, st.width * arity))
        return iter(())

    def _on_labels(self, msg: Labels) -> Iterator[Message]:
        st = self._state
        if not st.labels_in:
            raise UnexpectedMessage("labels not expected in this mode")
        self._advance(st.labels_in, msg.slot, msg.chunk, msg.count, "labels")
        if st.peer_payload_width and msg.ct_width != st.peer_payload_width:
            raise UnexpectedMessage("labels changed their ciphertext width")
        st.peer_payload_width = msg.ct_width
        step = msg.tag_width + msg.ct_width
        table = st.labels[msg.slot]
        for start in range(0, len(msg.body), step):
            table[msg.body[start : start + msg.tag_width]] = msg.body[
                start + msg.tag_width : start + step
            ]
        return iter(())

    # -- completion -------------------------------------------------------------------------

    def _maybe_finish(self) -> None:
        st = self._state
        if self._stage is not Stage.RUNNING or not self._sent_all:
            return
        streams = st.peer_masked_in + st.my_double_in + st.labels_in
        if not all(s.complete for s in streams):
            return
        self._result = self._compute_result()
        self._stage = Stage.DONE
        self._progress("match", 1, 1)

    def _compute_result(self) -> PsiResult:
        reveal = self.config.reveal
        if not reveal.learns_anything(self.role):
            return PsiResult(self.role, reveal, self._data.rows, None, None, None)
        if self.config.labeled:
            return self._labeled_result()
        if self._count_mode:
            return self._count_result()
        return self._rows_result()

    def _rows_result(self) -> PsiResult:
        st, codes = self._state, self._data.row_codes
        matched_any = np.zeros(codes.shape[0], dtype=bool)
        per_key = []
        match_ids: dict[int, bytes] | None = {} if self.config.align else None
        for slot, values in enumerate(self._data.slot_values):
            matched_unique = np.zeros(len(values), dtype=bool)
            peer = st.peer_sets[slot]
            hits = np.fromiter((d in peer for d in st.my_doubles[slot]), dtype=bool)
            matched_unique[st.my_order[slot][hits]] = True
            in_slot = _rows_hit(codes[:, slot], matched_unique)
            per_key.append(int(in_slot.sum()))
            if match_ids is not None:
                ids = {
                    int(st.my_order[slot][position]): hashlib.blake2b(
                        double, digest_size=16, key=st.salt, person=_ALIGN_PERSON
                    ).digest()
                    for position, double in enumerate(st.my_doubles[slot])
                    if hits[position]
                }
                for row in np.flatnonzero(in_slot & ~matched_any):
                    match_ids[int(row)] = ids[int(codes[row, slot])]
            matched_any |= in_slot
        return PsiResult(
            self.role,
            self.config.reveal,
            self._data.rows,
            np.flatnonzero(matched_any),
            None,
            tuple(per_key),
            match_ids=match_ids,
        )

    def _count_result(self) -> PsiResult:
        st = self._state
        k, width = len(self.config.kinds), st.width
        count = 0
        per_key = [0] * k
        for record in st.my_doubles[0]:
            hit = False
            for slot in range(k):
                if record[slot * width : (slot + 1) * width] in st.peer_sets[slot]:
                    per_key[slot] += 1
                    hit = True
            count += hit
        return PsiResult(
            self.role, self.config.reveal, self._data.rows, None, count, tuple(per_key)
        )

    def _labeled_result(self) -> PsiResult:
        st, codes = self._state, self._data.row_codes
        tag_width = st.tag_width
        matched_any = np.zeros(codes.shape[0], dtype=bool)
        payloads: dict[int, list[bytes]] = {}
        per_key = []
        collisions = 0
        for slot, values in enumerate(self._data.slot_values):
            aad = f"{self.config.run_id}|{slot}".encode()
            opened: dict[int, bytes] = {}
            for position, prf in enumerate(st.my_doubles[slot]):
                ct = st.labels[slot].get(_prf_tag(prf, st.salt, tag_width))
                if ct is None:
                    continue
                try:
                    plain = ChaCha20Poly1305(_prf_key(prf, st.salt)).decrypt(_NONCE, ct, aad)
                except InvalidTag:
                    collisions += 1  # a truncated-tag collision: not a match
                    continue
                size = int.from_bytes(plain[:4], "big")
                opened[int(st.my_order[slot][position])] = plain[4 : 4 + size]
            matched_unique = np.zeros(len(values), dtype=bool)
            matched_unique[list(opened)] = True
            column = codes[:, slot]
            in_slot = _rows_hit(column, matched_unique)
            per_key.append(int(in_slot.sum()))
            matched_any |= in_slot
            for row in np.flatnonzero(in_slot):
                payload = opened[int(column[row])]
                bucket = payloads.setdefault(int(row), [])
                if payload not in bucket:
                    bucket.append(payload)
        return PsiResult(
            self.role,
            self.config.reveal,
            self._data.rows,
            np.flatnonzero(matched_any),
            None,
            tuple(per_key),
            payloads=payloads,
            payload_columns=st.peer_payload_columns,
            tag_collisions=collisions,
        )
