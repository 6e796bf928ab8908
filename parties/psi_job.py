"""One side of a PSI job between two nodes: its own table in, its own outputs out.

Used by both ends of the Flower transport: the brand's ServerApp (left side, drives the rounds)
and the partner's relay server (right side, answers them). Both sides must agree on the job id
(which is the PSI run id), the key kinds, the reveal mode and the normalization rules; the PSI
handshake refuses the run otherwise. Outputs are written to a temporary folder and moved into
place only when the side has its result.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pec.psi_local import KeyPair, parse_key_spec, publish, refuse_match_id_column, write_matches
from pec.tables import inspect_table, read_columns
from psi.batch import BatchEngine, InlineEngine, PoolEngine
from psi.normalize import NormalizationRules
from psi.prepare import prepare_input
from psi.protocol import PsiConfig, PsiParty, PsiResult, Reveal
from psi.wire import PROTOCOL, Role

__all__ = ["PsiJobSide", "parse_keys"]


def parse_keys(text: str) -> tuple[KeyPair, ...]:
    """Keys as one string, ``;``-separated ``COL[:KIND]`` or ``LEFT=RIGHT[:KIND]`` specs."""
    return tuple(parse_key_spec(spec) for spec in text.split(";") if spec.strip())


@dataclass
class PsiJobSide:
    """A node's side of one PSI job: builds its party from its own table, writes its outputs."""

    job_id: str
    role: Role
    table: Path
    keys: str
    reveal: Reveal
    out: Path
    region: str = "CN"
    workers: int = 0
    align: bool = False
    labeled: bool = False
    """Labeled PSI (enrichment): the right side attaches payload columns for matched left rows."""
    payload: tuple[str, ...] = ()
    """The right side's payload columns (a labeled job; the left side names none)."""

    def __post_init__(self) -> None:
        self._started = time.perf_counter()
        self._engine: BatchEngine | None = None
        self.written = False

    def party(self) -> PsiParty:
        """Read this side's table and build its state machine.

        Raises:
            InputError: the table or a key column is missing or unreadable.
        """
        keys = parse_keys(self.keys)
        columns = [k.left if self.role is Role.LEFT else k.right for k in keys]
        payload = list(self.payload) if self.role is Role.RIGHT else []
        info = inspect_table(self.table, role=self.role.value)
        info.require([*columns, *payload], role=self.role.value)
        if self.align:
            refuse_match_id_column(info, self.role.value)
        rules = NormalizationRules(self.region)
        kinds = tuple(k.kind for k in keys)
        table = read_columns(self.table, list(dict.fromkeys(columns + payload)))
        data, self._reports = prepare_input(
            [table[c].rename(c) for c in columns], kinds, rules,
            payload=table[payload] if payload else None,
        )  # fmt: skip
        size = sum(len(v) for v in data.slot_values)
        self._engine = PoolEngine(self.workers) if size >= 20_000 else InlineEngine()
        config = PsiConfig(
            run_id=self.job_id,
            reveal=self.reveal,
            kinds=tuple(k.value for k in kinds),
            rules=rules.version(kinds),
            align=self.align,
            labeled=self.labeled or bool(self.payload),
        )
        return PsiParty(self.role, config, data, engine=self._engine)

    def finish(self, result: PsiResult, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write this side's outputs (its matched rows if it learned them, and a summary).

        ``extra`` goes into the summary too (the brand's transport and round trips).
        """
        if self._engine is not None:
            self._engine.close()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        workdir = self.out.parent / f".{self.out.name}.partial-{self.job_id[:12]}"
        workdir.mkdir(exist_ok=True)
        try:
            name = f"{self.role.value}.csv"
            if result.matched_rows is not None:
                write_matches(self.table, result, workdir / name)
            summary = {
                "protocol": PROTOCOL,
                "job_id": self.job_id,
                "role": self.role.value,
                "reveal": self.reveal.value,
                "rows": result.rows,
                "intersection": result.intersection,
                "per_key": list(result.per_key) if result.per_key is not None else None,
                "invalid": {r.column: r.invalid for r in self._reports},
                "outputs": [name] if result.matched_rows is not None else [],
                "seconds": round(time.perf_counter() - self._started, 3),
            } | (extra or {})
            (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            publish(workdir, self.out, ("summary.json", name))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.written = True
        return summary

    def abandon(self) -> None:
        """Release workers after a failure; nothing is written."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
