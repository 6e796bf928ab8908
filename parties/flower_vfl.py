"""VFL over Flower's deployment engine: the brand's ServerApp side.

Each request of :func:`federated.job.run_brand_job` is one Flower message (``query.pec``) to the
partner's SuperNode, whose ClientApp relays the bytes to the partner's own ``pec vfl serve``
process. The brand's outputs are written into its own folder; progress goes, one JSON line per
step, to an optional file that ``pec vfl local`` follows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from federated.artifacts import write_brand_outputs
from federated.brand import TrainingConfig
from federated.errors import ProtocolError
from federated.job import AUTO_BATCH, JobOptions, Progress, pack, run_brand_job, unpack
from federated.model import OptimizerConfig, OptimizerKind
from parties.flower_psi import FlowerExchange, wait_for_node
from parties.stream import StreamExchange, StreamListener
from pec.errors import InputError
from pec.vfl_tables import load_party_table

__all__ = ["job_options", "run_brand_vfl"]


def _names(text: object) -> list[str]:
    return [part.strip() for part in str(text or "").split(";") if part.strip()]


def job_options(config: Mapping[str, Any]) -> JobOptions:
    """The brand's job options from a run config (defaults as in ``pec vfl local``)."""
    optimizer = OptimizerConfig(
        kind=OptimizerKind(str(config.get("optimizer", "nesterov"))),
        learning_rate=float(config.get("learning-rate", 1.0)),
        l2=float(config.get("l2", 1e-4)),
        momentum=float(config.get("momentum", 0.7)),
    )
    training = TrainingConfig(
        epochs=int(config.get("epochs", 8)),
        batch_size=int(config.get("batch-size", 0)) or AUTO_BATCH,
        optimizer=optimizer,
        patience=int(config.get("patience", 3)),
        seed=int(config.get("seed", 0)),
        workers=int(config.get("workers", 0)) or 2,
        stop_on=str(config.get("stop-on", "auc")),
        positive_weight=float(config.get("positive-weight", 1.0)) or 1.0,
    )
    return JobOptions(
        key_bits=int(config.get("key-bits", 2048)),
        seed=int(config.get("seed", 0)),
        training=training,
        workers=int(config.get("workers", 0)),
        balance_classes=float(config.get("positive-weight", 1.0)) == 0,
    )


def run_brand_vfl(grid: Grid, config: Mapping[str, Any]) -> dict[str, Any]:
    """Run the brand's side of a VFL job from a Flower run config; returns its metrics.

    Run config keys: ``job-id``, ``table``, ``id-column``, ``labels`` and ``features``
    (``;``-separated; no features = every other column), ``test-table``, ``out``, ``key-bits``,
    ``seed``, ``epochs``, ``batch-size`` (0 = two steps per epoch), ``optimizer``,
    ``learning-rate``, ``momentum``,
    ``patience``, ``stop-on``, ``workers``, ``timeout``, ``progress-file``.
    """
    progress_file = str(config.get("progress-file") or "")

    def note(line: dict[str, Any]) -> None:
        if progress_file:
            with open(progress_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line | {"t": time.time()}) + "\n")

    try:
        return _run(
            grid,
            config,
            lambda stage, done, total: note({"stage": stage, "done": done, "total": total}),
        )
    except Exception as exc:
        # the reason goes to the brand's own progress file (our errors never carry data)
        kind = "input" if isinstance(exc, InputError) else "failed"
        note({"stage": "error", "kind": kind, "error": type(exc).__name__, "message": str(exc)})
        raise


def _run(grid: Grid, config: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
    job_id = str(config["job-id"])
    id_column = str(config.get("id-column", "id"))
    labels = _names(config["labels"])
    features = _names(config.get("features")) or None
    id_kind = str(config.get("id-kind", "raw"))
    train = load_party_table(
        Path(str(config["table"])),
        id_column,
        role="brand",
        labels=labels,
        features=features,
        id_kind=id_kind,
    )
    test = None
    if str(config.get("test-table") or ""):
        test = load_party_table(
            Path(str(config["test-table"])),
            id_column,
            role="brand test",
            labels=labels,
            features=list(train.feature_names),
            require_labels=False,
            id_kind=id_kind,
        )
    timeout = float(config.get("timeout", 600))
    flower = FlowerExchange(grid, wait_for_node(grid), job_id, timeout=timeout)
    transport = str(config.get("transport", "stream"))
    if transport not in ("stream", "flower"):
        raise InputError(f"unknown transport {transport!r} (stream or flower)")
    host = str(config.get("stream-host", "127.0.0.1"))
    stream = open_stream(flower, job_id, host, timeout) if transport == "stream" else None
    try:
        result = run_brand_job(
            job_id, train, stream or flower, job_options(config), test=test, progress=progress
        )
    finally:
        if stream is not None:
            stream.close()
    metrics = write_brand_outputs(result, Path(str(config["out"])))
    metrics["transport"] = transport
    metrics["flower_message_seconds"] = [round(s, 2) for s in flower.round_trips]
    return metrics


def open_stream(flower: FlowerExchange, job_id: str, host: str, timeout: float) -> StreamExchange:
    """Offer a direct stream over Flower and accept the partner's connection to it.

    Raises:
        PartyError, ProtocolError: the partner refused, or did not connect in time.
    """
    listener = StreamListener(host)
    try:
        op, header, _ = unpack(flower(pack("stream", {"job": job_id, **listener.offer()})))
        if op != "stream" or header.get("job") != job_id or "cert" not in header:
            raise ProtocolError("the partner did not accept the stream offer")
        return listener.accept(str(header["cert"]).encode("ascii"), 60.0, timeout)
    finally:
        listener.close()
