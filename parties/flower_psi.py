"""PSI over Flower's deployment engine: the brand's ServerApp side.

The brand runs the SuperLink and this code inside its ServerApp; each round trip of
:func:`psi.rounds.drive_rounds` is one Flower message (``query.pec``) to the partner's SuperNode,
whose ClientApp relays the bytes to the partner's own process (:mod:`parties.relay_server`). Every
PSI mode completes in two round trips.

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
from psi.errors import PsiAborted
from psi.protocol import Reveal
from psi.rounds import drive_rounds
from psi.wire import Role

__all__ = ["MESSAGE_TYPE", "FlowerExchange", "run_brand_psi", "wait_for_node"]

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


def run_brand_psi(grid: Grid, config: Mapping[str, Any]) -> dict[str, Any]:
    """Run the brand's side of a PSI job from a Flower run config; returns the brand's summary.

    Run config keys: ``job-id``, ``table`` (the brand's CSV/Parquet file), ``keys``
    (``;``-separated key specs), ``reveal``, ``out`` (output directory), ``timeout``, ``align``,
    ``labeled`` (enrichment: the partner attaches tag columns for the brand's matched rows).
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
    exchange = FlowerExchange(grid, wait_for_node(grid), side.job_id, timeout=timeout)
    party = side.party()
    try:
        result = drive_rounds(party, exchange)
    except Exception:
        side.abandon()
        raise
    summary = side.finish(result)
    summary["round_trip_seconds"] = [round(s, 2) for s in exchange.round_trips]
    return summary
