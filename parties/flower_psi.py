"""PSI over Flower's deployment engine: the brand's ServerApp side.

The brand runs the SuperLink and this code inside its ServerApp; each round trip of
:func:`psi.rounds.drive_rounds` is one Flower message (``query.pec``) to the partner's SuperNode,
whose ClientApp relays the bytes to the partner's own process (:mod:`parties.relay_server`). Every
PSI mode completes in two round trips; by default the first carries a direct stream's offer and
the second goes over that stream (:class:`OfferedStreamExchange`).

Replies are collected with our own push/pull loop (0.1 s) instead of ``send_and_receive`` (which
polls every 3 s). Errors that come back from the relay are codes and short reasons; they are
raised as :class:`~psi.errors.PsiAborted` and never carry data.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from parties.psi_job import PsiJobSide
from parties.stream import StreamExchange, StreamListener, pack_offer, unpack_offer
from pec.errors import InputError
from psi.errors import PsiAborted
from psi.protocol import Reveal
from psi.rounds import drive_rounds
from psi.wire import Role

__all__ = [
    "MESSAGE_TYPE",
    "FlowerExchange",
    "OfferedStreamExchange",
    "run_brand_psi",
    "wait_for_node",
]

MESSAGE_TYPE = "query.pec"


def to_record(job_id: str, payload: bytes) -> RecordDict:
    """The Flower content of one PEC message: the job id and the payload as raw bytes."""
    array = Array(dtype="uint8", shape=(len(payload),), stype="raw", data=payload)
    return RecordDict(
        {"meta": ConfigRecord({"job": job_id}), "data": ArrayRecord({"bytes": array})}
    )


def from_record(content: RecordDict) -> bytes:
    """The payload of a PEC message or reply.

    Raises:
        PsiAborted: the reply carries the relay's error instead of a payload.
    """
    meta = content.config_records.get("meta")
    if meta is not None and "error" in meta:
        raise PsiAborted(f"the partner refused or failed: {meta['error']!s}")
    record = content.array_records.get("data")
    if record is None or "bytes" not in record:
        raise PsiAborted("the partner's reply carries no payload")
    return bytes(record["bytes"].data)


def wait_for_node(grid: Grid, timeout: float = 60.0) -> int:
    """The node id of the (single) connected partner SuperNode.

    Raises:
        PsiAborted: no partner connected within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = list(grid.get_node_ids())
        if nodes:
            return int(nodes[0])
        time.sleep(0.5)
    raise PsiAborted(f"no partner SuperNode connected within {timeout:.0f} s")


class FlowerExchange:
    """One round trip = one Flower message to the partner and its reply."""

    def __init__(
        self, grid: Grid, node_id: int, job_id: str, *, timeout: float = 600.0, poll: float = 0.1
    ) -> None:
        self.grid, self.node_id, self.job_id = grid, node_id, job_id
        self.timeout, self.poll = timeout, poll
        self.round_trips: list[float] = []

    def __call__(self, request: bytes) -> bytes:
        """Send ``request``; return the reply's payload.

        Raises:
            PsiAborted: an error reply, or no reply within the timeout.
        """
        started = time.monotonic()
        message = Message(
            to_record(self.job_id, request), dst_node_id=self.node_id, message_type=MESSAGE_TYPE
        )
        ids = list(self.grid.push_messages([message]))
        deadline = started + self.timeout
        while time.monotonic() < deadline:
            replies = list(self.grid.pull_messages(ids))
            if replies:
                reply = replies[0]
                if reply.has_error():
                    raise PsiAborted(f"the partner's relay failed (code {reply.error.code})")
                self.round_trips.append(time.monotonic() - started)
                return from_record(reply.content)
            time.sleep(self.poll)
        raise PsiAborted(f"no reply from the partner within {self.timeout:.0f} s")


class OfferedStreamExchange:
    """The first round trip over Flower, carrying a stream offer; every later one on the stream.

    A PSI takes two round trips, and each Flower message costs seconds (the partner's SuperNode
    polls every 3 s and starts a ClientApp per message), so the offer rides on the first batch
    instead of costing a round trip of its own (as a model job's does). The stream is the one of
    :mod:`parties.stream`: TLS 1.3, both per-job certificates pinned, the partner dialing out.
    """

    def __init__(self, flower: FlowerExchange, host: str, timeout: float) -> None:
        self.flower, self.host, self.timeout = flower, host, timeout
        self.stream: StreamExchange | None = None

    def __call__(self, request: bytes) -> bytes:
        """Send ``request``; return the reply.

        Raises:
            PsiAborted: the partner refused the offer or did not connect.
            PartyError: the stream broke.
        """
        if self.stream is not None:
            return self.stream(request)
        listener = StreamListener(self.host)
        try:
            offer = {"job": self.flower.job_id, **listener.offer()}
            accepted = unpack_offer(self.flower(pack_offer(offer, request)))
            if accepted is None or accepted[0].get("job") != self.flower.job_id:
                raise PsiAborted("the partner did not accept the stream offer")
            header, reply = accepted
            cert = str(header.get("cert", "")).encode("ascii")
            self.stream = listener.accept(cert, 60.0, self.timeout)
        finally:
            listener.close()
        return reply

    def close(self) -> None:
        """Close the stream, if one was opened."""
        if self.stream is not None:
            self.stream.close()


def run_brand_psi(grid: Grid, config: Mapping[str, Any]) -> dict[str, Any]:
    """Run the brand's side of a PSI job from a Flower run config; returns the brand's summary.

    Run config keys: ``job-id``, ``table`` (the brand's CSV/Parquet file), ``keys``
    (``;``-separated key specs), ``reveal``, ``out`` (output directory), ``timeout``, ``align``,
    ``labeled`` (enrichment: the partner attaches tag columns for the brand's matched rows),
    ``transport`` (``stream``, the default: the second round trip on a direct stream offered
    with the first; ``flower``: both over Flower) and ``stream-host`` (the address the partner
    dials).
    """
    side = PsiJobSide(
        job_id=str(config["job-id"]),
        role=Role.LEFT,
        table=Path(str(config["table"])),
        keys=str(config["keys"]),
        reveal=Reveal(str(config["reveal"])),
        out=Path(str(config["out"])),
        align=bool(config.get("align", False)),
        labeled=bool(config.get("labeled", False)),
    )
    timeout = float(config.get("timeout", 600))
    transport = str(config.get("transport", "stream"))
    if transport not in ("stream", "flower"):
        raise InputError(f"unknown transport {transport!r} (stream or flower)")
    flower = FlowerExchange(grid, wait_for_node(grid), side.job_id, timeout=timeout)
    host = str(config.get("stream-host", "127.0.0.1"))
    streamed = OfferedStreamExchange(flower, host, timeout) if transport == "stream" else None
    party = side.party()
    try:
        result = drive_rounds(party, streamed or flower)
    except Exception:
        side.abandon()
        raise
    finally:
        if streamed is not None:
            streamed.close()
    travel: dict[str, Any] = {
        "transport": transport,
        "round_trip_seconds": [round(s, 2) for s in flower.round_trips],  # the Flower messages
    }
    if streamed is not None and streamed.stream is not None:
        travel["stream_round_trips"] = streamed.stream.round_trips
    return side.finish(result, travel)
