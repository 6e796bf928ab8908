"""An aggregate job between two nodes over Flower: group counts over the brand's set.

The intersection-aggregate of :mod:`psi.aggregate` (the partner holds the Paillier key and the
group column, the brand only its keys) runs as batched round trips
(:func:`psi.rounds.drive_rounds`), exactly as a PSI does: the brand's ServerApp drives
(:func:`run_brand_aggregate`), the partner's node answers through its relay target
(:class:`AggregateRelayJob`). Both sides derive the protocol's configuration from the job spec,
so nothing else needs agreeing. The brand writes ``aggregate.csv`` (a count per group, empty
where the partner suppressed it) and ``summary.json``; the partner writes only a summary.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parties.stream import BatchesOnStream
from pec.aggregate_local import AggregateOptions, make_party, shares, write_cells
from pec.errors import InputError
from pec.psi_local import KeyPair, parse_key_spec, publish
from psi.aggregate import AggregateConfig, AggregatePartner
from psi.batch import BatchEngine
from psi.normalize import NormalizationRules
from psi.rounds import Batch, drive_rounds, pack_frames, unpack_frames
from psi.wire import Role, from_wire, to_wire

__all__ = ["AggregateRelayJob", "aggregate_config", "run_brand_aggregate"]

OUTPUTS = ("summary.json", "aggregate.csv")


def aggregate_config(job_id: str, key: KeyPair) -> AggregateConfig:
    """The protocol configuration both sides derive from the job (id and key)."""
    rules = NormalizationRules()
    return AggregateConfig(
        run_id=job_id, rules=rules.version((key.kind,)), kind=key.kind.value, chunk_size=16_384
    )


def _write(
    out: Path, job_id: str, summary: dict[str, Any], cells: dict[str, int | None] | None
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = out.parent / f".{out.name}.partial-{job_id[:12]}"
    workdir.mkdir(exist_ok=True)
    try:
        names: tuple[str, ...] = ("summary.json",)
        if cells is not None:
            write_cells(workdir / "aggregate.csv", cells)
            names = OUTPUTS
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        publish(workdir, out, names)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_brand_aggregate(grid: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """Run the brand's side from a Flower run config; returns (and writes) its summary.

    Run config keys: ``job-id``, ``table`` (the brand's consented input), ``keys`` (one key spec
    ``brand=partner:kind``), ``out``, ``timeout``, ``transport`` and ``stream-host`` (as a
    PSI's: by default the first round trip offers a direct stream and the others go over it).
    """
    from parties.flower_psi import FlowerExchange, OfferedStreamExchange, wait_for_node

    started = time.perf_counter()
    job_id = str(config["job-id"])
    key = parse_key_spec(str(config["keys"]).split(";")[0])
    options = AggregateOptions(key=key, group="")
    party, engine, report = make_party(Role.LEFT, Path(str(config["table"])), key.left, "",
                                       aggregate_config(job_id, key), NormalizationRules(),
                                       options)  # fmt: skip
    timeout = float(config.get("timeout", 600))
    transport = str(config.get("transport", "stream"))
    streamed: OfferedStreamExchange | None = None
    try:
        if transport not in ("stream", "flower"):
            raise InputError(f"unknown transport {transport!r} (stream or flower)")
        exchange = FlowerExchange(grid, wait_for_node(grid), job_id, timeout=timeout)
        if transport == "stream":
            host = str(config.get("stream-host", "127.0.0.1"))
            streamed = OfferedStreamExchange(exchange, host, timeout)
        result = drive_rounds(party, streamed or exchange, max_rounds=12)
    finally:
        engine.close()
        if streamed is not None:
            streamed.close()
    summary = {
        "job_id": job_id,
        "rows": report["rows"],
        "invalid": report["invalid"],
        "intersection": result.intersection,
        "cells": result.cells,
        "shares": shares(result.cells, result.intersection),
        "suppressed": sum(1 for v in result.cells.values() if v is None),
        "seconds": round(time.perf_counter() - started, 3),
        "transport": transport,
        "round_trip_seconds": [round(s, 2) for s in exchange.round_trips],  # Flower messages
    }
    if streamed is not None and streamed.stream is not None:
        summary["stream_round_trips"] = streamed.stream.round_trips
    _write(Path(str(config["out"])), job_id, summary, result.cells)
    return summary


class AggregateRelayJob(BatchesOnStream):
    """The partner's side (a :class:`parties.relay_server.RelayJob`): its keys and groups."""

    def __init__(self, job_id: str, table: Path, key: KeyPair, group: str, out: Path,
                 *, min_cell: int, epsilon: float | None = None) -> None:  # fmt: skip
        self.job_id = job_id
        self.out = out
        self._table, self._key, self._group = table, key, group
        self._options = AggregateOptions(key=key, group=group, min_cell=min_cell,
                                         epsilon=epsilon)  # fmt: skip
        self._party: AggregatePartner | None = None
        self._engine: BatchEngine | None = None
        self._report: dict[str, Any] = {}
        self._started = time.perf_counter()

    def answer_batch(self, body: bytes) -> bytes:
        """Feed one batch of the brand's frames to the partner's party; its frames back.

        Raises:
            PecError: unreadable input, or a protocol violation in the batch.
        """
        incoming = unpack_frames(body)
        out: list[bytes] = []
        if self._party is None:
            party, self._engine, self._report = make_party(
                Role.RIGHT, self._table, self._key.right, self._group,
                aggregate_config(self.job_id, self._key), NormalizationRules(), self._options,
            )  # fmt: skip
            assert isinstance(party, AggregatePartner)
            self._party = party
            out.extend(to_wire(m) for m in party.start())
        for frame in incoming.frames:
            out.extend(to_wire(m) for m in self._party.receive(from_wire(frame)))
        return pack_frames(Batch(tuple(out), self._party.done))

    @property
    def done(self) -> bool:
        """True once the partner released the (suppressed) counts."""
        return self._party is not None and self._party.done

    def complete(self) -> dict[str, Any]:
        """Write the partner's summary (what it learned: the intersection size and its groups)."""
        assert self._party is not None
        result = self._party.result()
        self.abandon()
        summary = {
            "job_id": self.job_id,
            "rows": self._report.get("rows"),
            "groups": self._report.get("groups"),
            "intersection": result.intersection,
            "min_cell": self._options.min_cell,
            "epsilon": self._options.epsilon,
            "seconds": round(time.perf_counter() - self._started, 3),
        }
        _write(self.out, self.job_id, summary, None)
        return summary

    def abandon(self) -> None:
        """Release the batch workers; nothing is written."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
