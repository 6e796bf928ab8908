"""A lookalike job over Flower's deployment engine: the brand's ServerApp side.

The brand reads its seed (ids and one 0/1 label, no features), offers the partner a direct job
stream over Flower as a VFL job does, and drives :func:`federated.lookalike.run_brand_lookalike`.
Its outputs (``lookalike.json``, ``lookalike.png``) go to its own folder; progress goes, one JSON
line per step, to an optional file that ``pec lookalike local`` follows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from federated.lookalike import AudienceChoice, LookalikeOptions, run_brand_lookalike
from federated.lookalike_artifacts import peak_rss_mib, write_brand_lookalike
from parties.flower_psi import FlowerExchange, wait_for_node
from parties.flower_vfl import job_options, open_stream
from pec.errors import InputError
from pec.lookalike_tables import load_seed_table

__all__ = ["lookalike_options", "run_brand_lookalike_job"]


def lookalike_options(config: Mapping[str, Any]) -> LookalikeOptions:
    """The brand's lookalike options from a run config (``audience-size`` or ``threshold``).

    Raises:
        InputError: neither or both of ``audience-size`` and ``threshold``.
    """
    size = int(config.get("audience-size", 0)) or None
    threshold = float(config.get("threshold", 0.0)) or None
    try:
        choice = AudienceChoice(threshold=threshold, size=size)
        return LookalikeOptions(
            audience=choice,
            job=job_options(config),
            bands=int(config.get("bands", 20)),
            min_cell=int(config.get("min-cell", 20)),
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def run_brand_lookalike_job(grid: Grid, config: Mapping[str, Any]) -> dict[str, Any]:
    """Run the brand's side of a lookalike job from a Flower run config; returns its summary.

    Run config keys: those of :func:`parties.flower_vfl.run_brand_vfl` (one label, no
    features) plus ``audience-size`` or ``threshold``, ``bands`` and ``min-cell``.
    """
    progress_file = str(config.get("progress-file") or "")

    def note(line: dict[str, Any]) -> None:
        if progress_file:
            with open(progress_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line | {"t": time.time()}) + "\n")

    try:
        job_id = str(config["job-id"])
        seed = load_seed_table(
            Path(str(config["table"])),
            str(config.get("id-column", "id")),
            str(config["labels"]),
            id_kind=str(config.get("id-kind", "raw")),
        )
        options = lookalike_options(config)
        timeout = float(config.get("timeout", 600))
        flower = FlowerExchange(grid, wait_for_node(grid), job_id, timeout=timeout)
        transport = str(config.get("transport", "stream"))
        if transport not in ("stream", "flower"):
            raise InputError(f"unknown transport {transport!r} (stream or flower)")
        host = str(config.get("stream-host", "127.0.0.1"))
        stream = open_stream(flower, job_id, host, timeout) if transport == "stream" else None
        try:
            result = run_brand_lookalike(
                job_id,
                seed,
                stream or flower,
                options,
                progress=lambda stage, done, total: note(
                    {"stage": stage, "done": done, "total": total}
                ),
            )
        finally:
            if stream is not None:
                stream.close()
        extra: dict[str, Any] = {"transport": transport, "peak_rss_mib": peak_rss_mib()}
        if transport == "flower" or flower.round_trips:
            extra["flower_message_seconds"] = [round(t, 2) for t in flower.round_trips]
        summary = write_brand_lookalike(result, Path(str(config["out"])), extra)
    except Exception as exc:
        # the reason goes to the brand's own progress file (our errors never carry data)
        kind = "input" if isinstance(exc, InputError) else "failed"
        note({"stage": "error", "kind": kind, "error": type(exc).__name__, "message": str(exc)})
        raise
    return summary
