r"""Wire encoding of the protocol messages: paired :func:`to_wire` / :func:`from_wire`.

Layout: ``b"PECVFL1\\n"``, a 4-byte big-endian header length, a UTF-8 JSON header, then binary
blobs. Scalars go in the header (big integers as hex strings); arrays and integer sequences
(ciphertexts, masked values) go in blobs as little-endian float64/int64 or fixed-width signed
big-endian integers. Keys travel as public material only; nothing here logs.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

import numpy as np

from federated.errors import WireFormatError
from federated.messages import (
    EncryptedResiduals,
    Finish,
    Finished,
    GradientUpdate,
    KeyAnnouncement,
    MaskedGradient,
    Message,
    PartialScores,
    Ready,
    ScoreKind,
    ScoreRequest,
)

MAGIC = b"PECVFL1\n"
_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        KeyAnnouncement,
        Ready,
        ScoreRequest,
        PartialScores,
        EncryptedResiduals,
        MaskedGradient,
        Finish,
        Finished,
    )
}
_BIG_INT_FIELDS = {"n", "h_s"}
_INT_SEQ_FIELDS = {"ciphertexts", "values"}


def _int_seq_to_bytes(values: tuple[int, ...]) -> tuple[bytes, int]:
    width = max(((abs(v).bit_length() + 8) // 8 for v in values), default=1)
    return b"".join(int(v).to_bytes(width, "big", signed=True) for v in values), width


def _int_seq_from_bytes(data: bytes, width: int, count: int) -> tuple[int, ...]:
    if width < 1 or len(data) != width * count:
        raise WireFormatError("integer sequence has the wrong length")
    return tuple(
        int.from_bytes(data[i * width : (i + 1) * width], "big", signed=True) for i in range(count)
    )


def _encode(obj: Any, blobs: list[bytes]) -> Any:
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            dtype = "f8" if value.dtype.kind == "f" else "i8"
            arr = np.ascontiguousarray(value, dtype="<" + dtype)
            blobs.append(arr.tobytes())
            fields[f.name] = {"blob": len(blobs) - 1, "dtype": dtype, "len": int(arr.size)}
        elif f.name in _INT_SEQ_FIELDS:
            data, width = _int_seq_to_bytes(value)
            blobs.append(data)
            fields[f.name] = {"blob": len(blobs) - 1, "width": width, "len": len(value)}
        elif isinstance(value, GradientUpdate):
            fields[f.name] = {"update": _encode(value, blobs)}
        elif isinstance(value, ScoreKind):
            fields[f.name] = value.value
        elif f.name in _BIG_INT_FIELDS:
            fields[f.name] = format(value, "x")
        else:
            fields[f.name] = value
    return fields


def to_wire(message: Message) -> bytes:
    """Serialize a protocol message.

    Raises:
        WireFormatError: ``message`` is not a protocol message.
    """
    name = type(message).__name__
    if _TYPES.get(name) is not type(message):
        raise WireFormatError("not a protocol message")
    blobs: list[bytes] = []
    fields = _encode(message, blobs)
    header = json.dumps(
        {"type": name, "fields": fields, "blobs": [len(b) for b in blobs]}, separators=(",", ":")
    ).encode()
    return MAGIC + struct.pack(">I", len(header)) + header + b"".join(blobs)


def _decode(cls: type[Any], fields: dict[str, Any], blobs: list[bytes]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in fields:
            raise WireFormatError(f"missing field {f.name!r}")
        raw = fields[f.name]
        if isinstance(raw, dict) and "update" in raw:
            kwargs[f.name] = _decode(GradientUpdate, raw["update"], blobs)
        elif isinstance(raw, dict) and "dtype" in raw:
            dtype = np.dtype("<" + ("f8" if raw["dtype"] == "f8" else "i8"))
            arr = np.frombuffer(blobs[raw["blob"]], dtype=dtype)
            if arr.size != raw["len"]:
                raise WireFormatError(f"array {f.name!r} has the wrong length")
            kwargs[f.name] = arr.astype(dtype.newbyteorder("="))
        elif isinstance(raw, dict) and "width" in raw:
            kwargs[f.name] = _int_seq_from_bytes(blobs[raw["blob"]], raw["width"], raw["len"])
        elif f.name == "kind":
            kwargs[f.name] = ScoreKind(raw)
        elif f.name in _BIG_INT_FIELDS:
            kwargs[f.name] = int(raw, 16)
        else:
            kwargs[f.name] = raw
    return cls(**kwargs)


def from_wire(data: bytes) -> Message:
    """Parse bytes produced by :func:`to_wire`.

    Raises:
        WireFormatError: the bytes are not a well-formed protocol message.
    """
    try:
        if not data.startswith(MAGIC):
            raise WireFormatError("not a PEC VFL message")
        (hlen,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
        start = len(MAGIC) + 4
        header = json.loads(data[start : start + hlen])
        cls = _TYPES[header["type"]]
        blobs: list[bytes] = []
        pos = start + hlen
        for size in header["blobs"]:
            blobs.append(data[pos : pos + size])
            pos += size
        if pos != len(data):
            raise WireFormatError("trailing or missing bytes")
        message: Message = _decode(cls, header["fields"], blobs)
        return message
    except WireFormatError:
        raise
    except (KeyError, ValueError, TypeError, IndexError, struct.error) as exc:
        raise WireFormatError("malformed message") from exc
