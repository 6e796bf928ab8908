"""The PSI wire format: every message that crosses between the parties, and nothing else.

One frame per message::

    magic "PECPSI" | version (1 byte) | type (1 byte) | header length (4 bytes, big endian)
    | header (UTF-8 JSON) | body (raw bytes)

The header carries the run id, the sender's role, the sender's sequence number and the message's
own small fields; the body carries points, tags and ciphertexts as fixed-width records. Decoding
checks every length against the header, so a truncated or padded frame is rejected.

Crypto objects do not serialize themselves: this module only moves bytes. Nothing here is ever an
identifier in the clear: identifiers leave a party only hashed and masked.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from psi.errors import MalformedMessage

__all__ = [
    "PROTOCOL",
    "Abort",
    "AggCiphers",
    "AggHello",
    "AggRelease",
    "AggSum",
    "Hello",
    "Labels",
    "Message",
    "Points",
    "PointsKind",
    "Reveal",
    "Role",
    "from_wire",
    "to_wire",
]

PROTOCOL = "pec-ecdh-psi/1"
_MAGIC = b"PECPSI"
_VERSION = 1
_PREFIX = struct.Struct(">6sBBI")
_MAX_HEADER = 1 << 20


class Role(StrEnum):
    """The two sides of a PSI run. LEFT opens the handshake."""

    LEFT = "left"
    RIGHT = "right"

    @property
    def peer(self) -> Role:
        """The other side."""
        return Role.RIGHT if self is Role.LEFT else Role.LEFT


class Reveal(StrEnum):
    """Who learns what (agreed in the handshake)."""

    LEFT = "left"
    RIGHT = "right"
    BOTH = "both"
    COUNT = "count"

    def learns_rows(self, role: Role) -> bool:
        """Whether ``role`` learns which of its own rows matched."""
        return self is Reveal.BOTH or self.value == role.value

    def learns_anything(self, role: Role) -> bool:
        """Whether ``role`` learns rows or the count."""
        return self is Reveal.COUNT or self.learns_rows(role)


class PointsKind(StrEnum):
    """What a :class:`Points` message carries."""

    MASKED = "masked"  # the sender's own values, masked once by the sender
    DOUBLE = "double"  # the receiver's values, masked again by the sender


class _Type(IntEnum):
    HELLO = 1
    POINTS = 2
    LABELS = 3
    ABORT = 4
    AGG_HELLO = 5
    AGG_CIPHERS = 6
    AGG_SUM = 7
    AGG_RELEASE = 8


@dataclass(frozen=True)
class Hello:
    """Opens a run: what each side proposes and how much it will send."""

    run_id: str
    sender: Role
    seq: int
    protocol: str
    rules: str
    reveal: str
    kinds: tuple[str, ...]
    labeled: bool
    salt_share: bytes
    sizes: tuple[int, ...]
    payload_columns: tuple[str, ...] = ()
    align: bool = False


@dataclass(frozen=True)
class Points:
    """A chunk of points: ``count`` records of ``arity`` values of ``width`` bytes each.

    ``slot`` is the key slot (or -1 when records carry every slot, as in count mode).
    """

    run_id: str
    sender: Role
    seq: int
    kind: PointsKind
    slot: int
    chunk: int
    count: int
    arity: int
    width: int
    body: bytes


@dataclass(frozen=True)
class Labels:
    """A chunk of labeled-PSI records: ``count`` times (tag of ``tag_width`` | ciphertext)."""

    run_id: str
    sender: Role
    seq: int
    slot: int
    chunk: int
    count: int
    tag_width: int
    ct_width: int
    body: bytes


@dataclass(frozen=True)
class Abort:
    """The sender stops the run. Errors cross as data: a code and a reason without identifiers."""

    run_id: str
    sender: Role
    seq: int
    code: str
    reason: str


@dataclass(frozen=True)
class AggHello:
    """Opens an intersection-aggregate run; the partner's also carries its Paillier public key."""

    run_id: str
    sender: Role
    seq: int
    protocol: str
    rules: str
    kind: str
    salt_share: bytes
    size: int
    public_n: int = 0
    public_hs: int = 0
    obfuscator_bits: int = 0
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class AggCiphers:
    """A chunk of the partner's records: ``count`` times (masked point | ciphertext)."""

    run_id: str
    sender: Role
    seq: int
    chunk: int
    count: int
    ct_width: int
    body: bytes


@dataclass(frozen=True)
class AggSum:
    """The brand's homomorphic sum over the matched records, re-randomized."""

    run_id: str
    sender: Role
    seq: int
    ciphertext: int


@dataclass(frozen=True)
class AggRelease:
    """What the partner releases: cell counts (None where suppressed), and how."""

    run_id: str
    sender: Role
    seq: int
    cells: tuple[tuple[str, int | None], ...]
    min_cell: int
    epsilon: float | None


AggMessage = AggHello | AggCiphers | AggSum | AggRelease
Message = Hello | Points | Labels | Abort | AggHello | AggCiphers | AggSum | AggRelease


def _frame(kind: _Type, header: dict[str, Any], body: bytes) -> bytes:
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return _PREFIX.pack(_MAGIC, _VERSION, int(kind), len(head)) + head + body


def to_wire(message: Message) -> bytes:
    """Encode a message as one frame."""
    base = {"run_id": message.run_id, "sender": str(message.sender), "seq": message.seq}
    if isinstance(message, Hello):
        header = base | {
            "protocol": message.protocol,
            "rules": message.rules,
            "reveal": message.reveal,
            "kinds": list(message.kinds),
            "labeled": message.labeled,
            "salt_share": message.salt_share.hex(),
            "sizes": list(message.sizes),
            "payload_columns": list(message.payload_columns),
            "align": message.align,
        }
        return _frame(_Type.HELLO, header, b"")
    if isinstance(message, Points):
        header = base | {
            "kind": str(message.kind),
            "slot": message.slot,
            "chunk": message.chunk,
            "count": message.count,
            "arity": message.arity,
            "width": message.width,
        }
        return _frame(_Type.POINTS, header, message.body)
    if isinstance(message, Abort):
        return _frame(_Type.ABORT, base | {"code": message.code, "reason": message.reason}, b"")
    if isinstance(message, AggHello):
        header = base | {
            "protocol": message.protocol,
            "rules": message.rules,
            "kind": message.kind,
            "salt_share": message.salt_share.hex(),
            "size": message.size,
            "public_n": format(message.public_n, "x"),
            "public_hs": format(message.public_hs, "x"),
            "obfuscator_bits": message.obfuscator_bits,
            "groups": list(message.groups),
        }
        return _frame(_Type.AGG_HELLO, header, b"")
    if isinstance(message, AggCiphers):
        header = base | {
            "chunk": message.chunk,
            "count": message.count,
            "ct_width": message.ct_width,
        }
        return _frame(_Type.AGG_CIPHERS, header, message.body)
    if isinstance(message, AggSum):
        return _frame(_Type.AGG_SUM, base | {"ciphertext": format(message.ciphertext, "x")}, b"")
    if isinstance(message, AggRelease):
        header = base | {
            "cells": [[label, value] for label, value in message.cells],
            "min_cell": message.min_cell,
            "epsilon": message.epsilon,
        }
        return _frame(_Type.AGG_RELEASE, header, b"")
    header = base | {
        "slot": message.slot,
        "chunk": message.chunk,
        "count": message.count,
        "tag_width": message.tag_width,
        "ct_width": message.ct_width,
    }
    return _frame(_Type.LABELS, header, message.body)


def _int(header: dict[str, Any], name: str, low: int = 0) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise MalformedMessage(f"header field {name!r} must be an integer >= {low}")
    return value


def _str(header: dict[str, Any], name: str) -> str:
    value = header.get(name)
    if not isinstance(value, str):
        raise MalformedMessage(f"header field {name!r} must be a string")
    return value


def _strs(header: dict[str, Any], name: str) -> tuple[str, ...]:
    value = header.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedMessage(f"header field {name!r} must be a list of strings")
    return tuple(value)


def from_wire(frame: bytes) -> Message:
    """Decode one frame.

    Raises:
        MalformedMessage: on a bad magic, version, type, header or body length.
    """
    if len(frame) < _PREFIX.size:
        raise MalformedMessage(f"frame of {len(frame)} bytes is shorter than the prefix")
    magic, version, kind, head_len = _PREFIX.unpack_from(frame)
    if magic != _MAGIC:
        raise MalformedMessage("not a PEC PSI frame (bad magic)")
    if version != _VERSION:
        raise MalformedMessage(f"unsupported frame version {version}")
    if head_len > _MAX_HEADER or _PREFIX.size + head_len > len(frame):
        raise MalformedMessage("frame is truncated (header length exceeds the frame)")
    try:
        header = json.loads(frame[_PREFIX.size : _PREFIX.size + head_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage("frame header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise MalformedMessage("frame header is not an object")
    body = frame[_PREFIX.size + head_len :]
    try:
        sender = Role(_str(header, "sender"))
    except ValueError:
        raise MalformedMessage("header field 'sender' must be left or right") from None
    run_id, seq = _str(header, "run_id"), _int(header, "seq")
    if kind == _Type.HELLO:
        if body:
            raise MalformedMessage("a hello carries no body")
        try:
            salt = bytes.fromhex(_str(header, "salt_share"))
        except ValueError:
            raise MalformedMessage("header field 'salt_share' must be hex") from None
        sizes = header.get("sizes")
        if not isinstance(sizes, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sizes
        ):
            raise MalformedMessage("header field 'sizes' must be a list of counts")
        labeled, align = header.get("labeled"), header.get("align", False)
        if not isinstance(labeled, bool) or not isinstance(align, bool):
            raise MalformedMessage("header fields 'labeled' and 'align' must be booleans")
        return Hello(
            run_id=run_id,
            sender=sender,
            seq=seq,
            protocol=_str(header, "protocol"),
            rules=_str(header, "rules"),
            reveal=_str(header, "reveal"),
            kinds=_strs(header, "kinds"),
            labeled=labeled,
            salt_share=salt,
            sizes=tuple(sizes),
            payload_columns=_strs(header, "payload_columns"),
            align=align,
        )
    if kind == _Type.POINTS:
        try:
            points_kind = PointsKind(_str(header, "kind"))
        except ValueError:
            raise MalformedMessage("header field 'kind' must be masked or double") from None
        count, arity, width = (
            _int(header, "count"),
            _int(header, "arity", 1),
            _int(header, "width", 1),
        )
        if len(body) != count * arity * width:
            raise MalformedMessage(
                f"points body has {len(body)} bytes, header says {count}x{arity}x{width}"
            )
        return Points(
            run_id=run_id,
            sender=sender,
            seq=seq,
            kind=points_kind,
            slot=_int(header, "slot", -1),
            chunk=_int(header, "chunk"),
            count=count,
            arity=arity,
            width=width,
            body=body,
        )
    if kind == _Type.LABELS:
        count = _int(header, "count")
        tag_width, ct_width = _int(header, "tag_width", 1), _int(header, "ct_width", 1)
        if len(body) != count * (tag_width + ct_width):
            raise MalformedMessage(
                f"labels body has {len(body)} bytes, header says {count}x({tag_width}+{ct_width})"
            )
        return Labels(
            run_id=run_id,
            sender=sender,
            seq=seq,
            slot=_int(header, "slot"),
            chunk=_int(header, "chunk"),
            count=count,
            tag_width=tag_width,
            ct_width=ct_width,
            body=body,
        )
    if kind == _Type.ABORT:
        return Abort(run_id, sender, seq, _str(header, "code"), _str(header, "reason"))
    if kind in (_Type.AGG_HELLO, _Type.AGG_SUM, _Type.AGG_RELEASE) and body:
        raise MalformedMessage("this message carries no body")
    if kind == _Type.AGG_HELLO:
        try:
            salt = bytes.fromhex(_str(header, "salt_share"))
            public_n = int(_str(header, "public_n"), 16)
            public_hs = int(_str(header, "public_hs"), 16)
        except ValueError:
            raise MalformedMessage("salt and public key fields must be hex") from None
        return AggHello(
            run_id=run_id,
            sender=sender,
            seq=seq,
            protocol=_str(header, "protocol"),
            rules=_str(header, "rules"),
            kind=_str(header, "kind"),
            salt_share=salt,
            size=_int(header, "size"),
            public_n=public_n,
            public_hs=public_hs,
            obfuscator_bits=_int(header, "obfuscator_bits"),
            groups=_strs(header, "groups"),
        )
    if kind == _Type.AGG_CIPHERS:
        count, ct_width = _int(header, "count"), _int(header, "ct_width", 1)
        if len(body) != count * (32 + ct_width):
            raise MalformedMessage(
                f"ciphers body has {len(body)} bytes, header says {count}x(32+{ct_width})"
            )
        return AggCiphers(run_id, sender, seq, _int(header, "chunk"), count, ct_width, body)
    if kind == _Type.AGG_SUM:
        try:
            ciphertext = int(_str(header, "ciphertext"), 16)
        except ValueError:
            raise MalformedMessage("the sum must be hex") from None
        return AggSum(run_id, sender, seq, ciphertext)
    if kind == _Type.AGG_RELEASE:
        cells = header.get("cells")
        if not isinstance(cells, list) or not all(
            isinstance(c, list)
            and len(c) == 2
            and isinstance(c[0], str)
            and (c[1] is None or (isinstance(c[1], int) and not isinstance(c[1], bool)))
            for c in cells
        ):
            raise MalformedMessage("header field 'cells' must be [label, count|null] pairs")
        epsilon = header.get("epsilon")
        if epsilon is not None and not isinstance(epsilon, int | float):
            raise MalformedMessage("header field 'epsilon' must be a number or null")
        return AggRelease(
            run_id,
            sender,
            seq,
            tuple((c[0], c[1]) for c in cells),
            _int(header, "min_cell"),
            None if epsilon is None else float(epsilon),
        )
    raise MalformedMessage(f"unknown message type {kind}")
