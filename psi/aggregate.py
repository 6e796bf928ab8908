"""Intersection-aggregate: group counts of a partner attribute over the brand's set, nothing else.

The brand holds a set (say, its lost leads); the partner holds people with an attribute (say, the
competitor brand they bought). The brand learns, per attribute value, how many of its people the
partner knows with that value — with cells below the partner's threshold suppressed and optional
Laplace noise — and never which person is in which cell. The construction follows the
intersection-sum of Private Join and Compute (Ion et al., 2020), with a packed one-hot count in
place of a sum:

1. both send a hello; the partner's carries its fresh Paillier public key and the attribute's
   values (the group labels);
2. brand → partner: its keys, hashed and masked (``H(x)^a``);
3. partner → brand: those values masked again (``H(x)^ab``), **shuffled**; then each of its
   records as ``H(y)^b`` with ``Enc(2^(g·s))`` — a one-hot count in slot ``g`` of width ``s`` bits;
4. brand: masks each ``H(y)^b`` to ``H(y)^ba``; where it is among the doubles, multiplies the
   ciphertext into a running product (a homomorphic sum of the one-hot vectors); re-randomizes the
   product and sends it;
5. partner: decrypts the counts per slot, adds noise if configured, suppresses small cells, and
   releases the cells to the brand.

What each side learns is in ``docs/threat-model.md``: the brand learns the intersection size and
the released cells; the partner learns the brand's set size and the cell counts before
suppression. Semi-honest model. State machines only: messages in, messages out, no I/O.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

from pec.crypto.masking import POINT_BYTES, InvalidPoint, MaskingKey
from pec.paillier import (
    EncryptedVector,
    KeyPair,
    PaillierEngine,
    PaillierError,
    PublicKey,
    encode_int_vector,
)
from psi.batch import BatchEngine, InlineEngine
from psi.errors import (
    HandshakeMismatch,
    InvalidPeerPoint,
    ProtocolError,
    PsiError,
    UnexpectedMessage,
)
from psi.protocol import check_envelope, random_permutation, split_records, truncation_width
from psi.wire import (
    AggCiphers,
    AggHello,
    AggRelease,
    AggSum,
    Message,
    Points,
    PointsKind,
    Role,
)

__all__ = [
    "AGG_PROTOCOL",
    "AggregateBrand",
    "AggregateConfig",
    "AggregatePartner",
    "AggregateResult",
    "slot_bits_for",
]

AGG_PROTOCOL = "pec-psi-aggregate/1"
_SALT_PERSON = b"pec/agg-salt/v1"


class _Stage(Enum):
    NEW = "new"
    HELLO_SENT = "hello-sent"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class AggregateConfig:
    """What both sides agree on: the run, the key's normalization rules and kind."""

    run_id: str
    rules: str
    kind: str
    chunk_size: int = 16_384


@dataclass(frozen=True)
class AggregateResult:
    """What a side learned. ``cells`` maps each group label to its count, None if suppressed."""

    cells: dict[str, int | None]
    intersection: int | None
    min_cell: int
    epsilon: float | None


def slot_bits_for(brand_size: int) -> int:
    """Bits per count slot: room for every brand record in one cell, plus a guard bit."""
    return max(1, brand_size.bit_length()) + 1


def _salt(run_id: str, brand_share: bytes, partner_share: bytes) -> bytes:
    return hashlib.blake2b(
        run_id.encode() + brand_share + partner_share, digest_size=32, person=_SALT_PERSON
    ).digest()


def _tag(config: AggregateConfig) -> bytes:
    return f"{AGG_PROTOCOL}|kind={config.kind}".encode()


class _Party(ABC):
    role: Role

    def __init__(
        self,
        config: AggregateConfig,
        engine: BatchEngine | None,
        randbytes: Callable[[int], bytes],
    ) -> None:
        self.config = config
        self._engine = engine or InlineEngine()
        self._randbytes = randbytes
        self._key = MaskingKey.generate(randbytes=randbytes)
        self._salt_share = randbytes(32)
        self._stage = _Stage.NEW
        self._seq_in = 0
        self._seq_out = 0
        self._salt = b""
        self._width = POINT_BYTES
        self._result: AggregateResult | None = None

    @property
    def done(self) -> bool:
        """Whether the run completed."""
        return self._stage is _Stage.DONE

    def result(self) -> AggregateResult:
        """What this side learned.

        Raises:
            PsiError: before the run is done.
        """
        if self._result is None:
            raise PsiError(f"no result in stage {self._stage.value}")
        return self._result

    def _seq(self) -> int:
        self._seq_out += 1
        return self._seq_out - 1

    def receive(self, message: Message) -> Iterator[Message]:
        """Take one message from the peer; returns the messages to send (exhaust it).

        Raises:
            UnexpectedMessage: wrong run, sender, sequence, stage or message type.
            HandshakeMismatch: the peer's hello disagrees with this side's config.
            InvalidPeerPoint: a point that is not a valid curve point.
        """
        if self._stage in (_Stage.NEW, _Stage.DONE, _Stage.FAILED):
            raise UnexpectedMessage(f"message received in stage {self._stage.value}")
        try:
            check_envelope(message, self.config.run_id, self.role.peer, self._seq_in)
            if isinstance(message, AggHello) != (self._stage is _Stage.HELLO_SENT):
                raise UnexpectedMessage(f"{type(message).__name__} not expected now")
            self._seq_in += 1
            return iter(list(self._dispatch(message)))
        except (ProtocolError, InvalidPoint, PaillierError) as exc:
            self._stage = _Stage.FAILED
            if isinstance(exc, InvalidPoint):
                raise InvalidPeerPoint(f"the peer sent an invalid point: {exc}") from exc
            if isinstance(exc, PaillierError):
                raise UnexpectedMessage(f"unusable ciphertext from the peer: {exc}") from exc
            raise

    @abstractmethod
    def _dispatch(self, message: Message) -> Iterator[Message]:
        """Handle one checked message of this side's protocol."""

    def _check_hello(self, hello: AggHello) -> None:
        for what, ours, theirs in (
            ("protocol version", AGG_PROTOCOL, hello.protocol),
            ("normalization rules", self.config.rules, hello.rules),
            ("key kind", self.config.kind, hello.kind),
        ):
            if ours != theirs:
                raise HandshakeMismatch(f"the peer uses a different {what}: {theirs!r}")
        if len(hello.salt_share) != 32:
            raise HandshakeMismatch("the peer's salt share is not 32 bytes")


class AggregateBrand(_Party):
    """The brand's side: sends its masked set, sums the matched encrypted counts, learns cells."""

    role = Role.LEFT

    def __init__(
        self,
        config: AggregateConfig,
        values: Sequence[bytes],
        *,
        engine: BatchEngine | None = None,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(config, engine, randbytes)
        self._values = tuple(values)
        self._doubles: set[bytes] = set()
        self._doubles_in = 0
        self._records_in = 0
        self._partner_size = 0
        self._public: PublicKey | None = None
        self._groups: tuple[str, ...] = ()
        self._product = 1
        self._matched = 0
        self._next_chunk = 0
        self._sum_sent = False

    def start(self) -> Iterator[Message]:
        """Open the run.

        Raises:
            UnexpectedMessage: if called twice.
        """
        if self._stage is not _Stage.NEW:
            raise UnexpectedMessage("start() called twice")
        self._stage = _Stage.HELLO_SENT
        return iter(
            [
                AggHello(
                    self.config.run_id, self.role, self._seq(), AGG_PROTOCOL, self.config.rules,
                    self.config.kind, self._salt_share, len(self._values),
                )
            ]
        )  # fmt: skip

    def _dispatch(self, message: Message) -> Iterator[Message]:
        if isinstance(message, AggHello):
            yield from self._on_hello(message)
        elif isinstance(message, Points) and message.kind is PointsKind.DOUBLE:
            self._on_doubles(message)
        elif isinstance(message, AggCiphers):
            self._on_ciphers(message)
        elif isinstance(message, AggRelease):
            self._on_release(message)
            return
        else:
            raise UnexpectedMessage(f"{type(message).__name__} not expected by the brand")
        complete = (
            self._stage is _Stage.RUNNING
            and self._doubles_in == len(self._values)
            and self._records_in == self._partner_size
        )
        if complete and not self._sum_sent:
            self._sum_sent = True
            yield self._sum()

    def _on_hello(self, hello: AggHello) -> Iterator[Message]:
        self._check_hello(hello)
        if not hello.groups or hello.public_n < 2**64:
            raise HandshakeMismatch("the partner sent no groups or no usable public key")
        self._public = PublicKey(hello.public_n, hello.public_hs, hello.obfuscator_bits)
        if slot_bits_for(len(self._values)) * len(hello.groups) >= self._public.key_bits - 2:
            raise HandshakeMismatch("too many groups for one ciphertext at this key size")
        self._groups, self._partner_size = hello.groups, hello.size
        self._salt = _salt(self.config.run_id, self._salt_share, hello.salt_share)
        self._width = truncation_width(len(self._values), hello.size)
        self._stage = _Stage.RUNNING
        order = list(self._values)
        chunk = self.config.chunk_size
        for index, start in enumerate(range(0, len(order), chunk)):
            picked = order[start : start + chunk]
            body = self._engine.hash_and_mask(
                self._key.raw_scalar(), self._salt, _tag(self.config), picked, False
            )
            yield Points(
                self.config.run_id, self.role, self._seq(), PointsKind.MASKED, 0, index,
                len(picked), 1, POINT_BYTES, body,
            )  # fmt: skip

    def _on_doubles(self, msg: Points) -> None:
        if msg.width != self._width or msg.arity != 1:
            raise UnexpectedMessage("doubles have the wrong width")
        if self._doubles_in + msg.count > len(self._values):
            raise UnexpectedMessage("more doubles than values sent")
        self._doubles.update(split_records(msg.body, self._width))
        self._doubles_in += msg.count

    def _on_ciphers(self, msg: AggCiphers) -> None:
        assert self._public is not None
        if self._doubles_in != len(self._values):
            raise UnexpectedMessage("records arrived before all doubles")
        if msg.chunk != self._next_chunk or self._records_in + msg.count > self._partner_size:
            raise UnexpectedMessage("records out of order or beyond the announced size")
        expected_width = (self._public.nsquare.bit_length() + 7) // 8
        if msg.ct_width != expected_width:
            raise UnexpectedMessage("ciphertexts have the wrong width")
        self._next_chunk += 1
        self._records_in += msg.count
        step = POINT_BYTES + msg.ct_width
        records = split_records(msg.body, step)
        points = b"".join(r[:POINT_BYTES] for r in records)
        doubled = split_records(
            self._engine.mask_and_truncate(self._key.raw_scalar(), points, self._width, False),
            self._width,
        )
        nsq = self._public.nsquare
        for record, value in zip(records, doubled, strict=True):
            if value in self._doubles:
                ciphertext = int.from_bytes(record[POINT_BYTES:], "big")
                if not 0 < ciphertext < nsq:
                    raise UnexpectedMessage("a ciphertext is out of range")
                self._product = self._product * ciphertext % nsq
                self._matched += 1

    def _sum(self) -> AggSum:
        assert self._public is not None
        bound = slot_bits_for(len(self._values)) * len(self._groups)
        product = EncryptedVector.from_ints(self._public, [self._product], 0, bound)
        with PaillierEngine(self._public, workers=1) as engine:
            fresh = engine.rerandomize(product)
        return AggSum(self.config.run_id, self.role, self._seq(), int(fresh.ciphertexts[0]))

    def _on_release(self, msg: AggRelease) -> None:
        if not self._sum_sent:
            raise UnexpectedMessage("release before the sum was sent")
        self._result = AggregateResult(dict(msg.cells), self._matched, msg.min_cell, msg.epsilon)
        self._stage = _Stage.DONE


class AggregatePartner(_Party):
    """The partner's side: holds the attribute and the Paillier key, releases suppressed cells."""

    role = Role.RIGHT

    def __init__(
        self,
        config: AggregateConfig,
        values: Sequence[bytes],
        groups: Sequence[int],
        labels: Sequence[str],
        *,
        min_cell: int = 20,
        epsilon: float | None = None,
        key_bits: int = 2048,
        keypair: KeyPair | None = None,
        engine: BatchEngine | None = None,
        paillier_workers: int = 1,
        randbytes: Callable[[int], bytes] = os.urandom,
        uniform: Callable[[], float] | None = None,
    ) -> None:
        if len(values) != len(groups) or not labels:
            raise ValueError("one group per value, and at least one label")
        if any(not 0 <= g < len(labels) for g in groups):
            raise ValueError("a group index is out of range")
        if min_cell < 1 or (epsilon is not None and epsilon <= 0):
            raise ValueError("min_cell must be >= 1 and epsilon > 0")
        super().__init__(config, engine, randbytes)
        self._values = tuple(values)
        self._groups = tuple(groups)
        self._labels = tuple(labels)
        self._min_cell = min_cell
        self._epsilon = epsilon
        self._keys = keypair or KeyPair.generate(key_bits)
        self._paillier_workers = paillier_workers
        self._uniform = uniform or secrets.SystemRandom().random
        self._brand_size = 0
        self._masked: list[bytes] = []
        self._masked_in = 0

    def start(self) -> Iterator[Message]:
        """Open the run with the public key and the group labels.

        Raises:
            UnexpectedMessage: if called twice.
        """
        if self._stage is not _Stage.NEW:
            raise UnexpectedMessage("start() called twice")
        self._stage = _Stage.HELLO_SENT
        public = self._keys.public_key
        return iter(
            [
                AggHello(
                    self.config.run_id, self.role, self._seq(), AGG_PROTOCOL, self.config.rules,
                    self.config.kind, self._salt_share, len(self._values), public.n, public.h_s,
                    public.obfuscator_bits, self._labels,
                )
            ]
        )  # fmt: skip

    def _dispatch(self, message: Message) -> Iterator[Message]:
        if isinstance(message, AggHello):
            self._check_hello(message)
            self._brand_size = message.size
            if (
                slot_bits_for(message.size) * len(self._labels)
                >= self._keys.public_key.key_bits - 2
            ):
                raise HandshakeMismatch("too many groups for one ciphertext at this key size")
            self._salt = _salt(self.config.run_id, message.salt_share, self._salt_share)
            self._width = truncation_width(message.size, len(self._values))
            self._stage = _Stage.RUNNING
            if message.size == 0:
                yield from self._send_records()
        elif isinstance(message, Points) and message.kind is PointsKind.MASKED:
            yield from self._on_masked(message)
        elif isinstance(message, AggSum):
            yield self._release(message)
        else:
            raise UnexpectedMessage(f"{type(message).__name__} not expected by the partner")

    def _on_masked(self, msg: Points) -> Iterator[Message]:
        if msg.width != POINT_BYTES or msg.arity != 1:
            raise UnexpectedMessage("masked values have the wrong width")
        if self._masked_in + msg.count > self._brand_size:
            raise UnexpectedMessage("more masked values than announced")
        self._masked_in += msg.count
        doubled = self._engine.mask_and_truncate(
            self._key.raw_scalar(), msg.body, self._width, False
        )
        self._masked.extend(split_records(doubled, self._width))
        if self._masked_in == self._brand_size:
            yield from self._send_doubles()
            yield from self._send_records()

    def _send_doubles(self) -> Iterator[Message]:
        shuffled = [self._masked[i] for i in random_permutation(len(self._masked), self._randbytes)]
        self._masked = []
        chunk = self.config.chunk_size
        for index, start in enumerate(range(0, len(shuffled), chunk)):
            picked = shuffled[start : start + chunk]
            yield Points(
                self.config.run_id, self.role, self._seq(), PointsKind.DOUBLE, 0, index,
                len(picked), 1, self._width, b"".join(picked),
            )  # fmt: skip

    def _send_records(self) -> Iterator[Message]:
        slot = slot_bits_for(self._brand_size)
        public = self._keys.public_key
        ct_width = (public.nsquare.bit_length() + 7) // 8
        order = random_permutation(len(self._values), self._randbytes)
        chunk = self.config.chunk_size
        with PaillierEngine(
            public, self._keys.private_key, workers=self._paillier_workers
        ) as paillier:
            for index, start in enumerate(range(0, len(order), chunk)):
                picked = [int(i) for i in order[start : start + chunk]]
                points = split_records(
                    self._engine.hash_and_mask(
                        self._key.raw_scalar(), self._salt, _tag(self.config),
                        [self._values[i] for i in picked], False,
                    ),
                    POINT_BYTES,
                )  # fmt: skip
                onehot = encode_int_vector([1 << (self._groups[i] * slot) for i in picked])
                cts = paillier.encrypt_encoded(onehot).to_ints()
                body = b"".join(
                    p + c.to_bytes(ct_width, "big") for p, c in zip(points, cts, strict=True)
                )
                yield AggCiphers(
                    self.config.run_id, self.role, self._seq(), index, len(picked), ct_width, body
                )

    def _laplace(self) -> float:
        assert self._epsilon is not None
        u = self._uniform() - 0.5
        return -math.copysign(1.0, u) * math.log(1 - 2 * abs(u)) / self._epsilon

    def _release(self, msg: AggSum) -> AggRelease:
        slot = slot_bits_for(self._brand_size)
        public = self._keys.public_key
        bound = slot * len(self._labels)
        vector = EncryptedVector.from_ints(public, [msg.ciphertext], 0, bound)
        with PaillierEngine(public, self._keys.private_key, workers=1) as paillier:
            total = paillier.decrypt_encoded(vector).ints[0]
        mask = (1 << slot) - 1
        counts = [(total >> (g * slot)) & mask for g in range(len(self._labels))]
        if any(c >> (slot - 1) for c in counts) or sum(counts) > self._brand_size:
            raise UnexpectedMessage("the sum does not decode to valid counts")
        cells: list[tuple[str, int | None]] = []
        for label, count in zip(self._labels, counts, strict=True):
            released = count
            if self._epsilon is not None:
                released = max(0, round(count + self._laplace()))
            cells.append((label, released if released >= self._min_cell else None))
        self._result = AggregateResult(dict(zip(self._labels, counts, strict=True)), sum(counts),
                                       self._min_cell, self._epsilon)  # fmt: skip
        self._stage = _Stage.DONE
        return AggRelease(
            self.config.run_id, self.role, self._seq(), tuple(cells), self._min_cell, self._epsilon
        )
