"""Run two PSI parties in-process, with every message through the wire format."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from psi.normalize import KeyKind, NormalizationRules
from psi.prepare import prepare_input
from psi.protocol import PartyInput, PsiConfig, PsiParty, PsiResult, Reveal
from psi.wire import Role, from_wire, to_wire

RULES = NormalizationRules()


def make_parties(
    left: Sequence[Sequence[str | None]],
    right: Sequence[Sequence[str | None]],
    kinds: Sequence[KeyKind],
    reveal: Reveal,
    *,
    payload: Sequence[str] | None = None,
    chunk_size: int = 3,
    run_id: str = "run-1",
    align: bool = False,
    progress: Callable[[Role, str, int, int], None] | None = None,
) -> tuple[PsiParty, PsiParty]:
    def table(rows: Sequence[Sequence[str | None]]) -> list[pd.Series]:
        return [
            pd.Series([row[k] for row in rows], dtype=object, name=f"k{k}")
            for k in range(len(kinds))
        ]

    li, _ = prepare_input(table(left), kinds, RULES)
    frame = pd.DataFrame({"tag": list(payload)}) if payload is not None else None
    ri, _ = prepare_input(table(right), kinds, RULES, payload=frame)
    config = PsiConfig(
        run_id=run_id,
        reveal=reveal,
        kinds=tuple(k.value for k in kinds),
        rules=RULES.version(tuple(kinds)),
        labeled=payload is not None,
        chunk_size=chunk_size,
        align=align,
    )

    def observer(role: Role) -> Callable[[str, int, int], None] | None:
        if progress is None:
            return None
        return lambda stage, done, total: progress(role, stage, done, total)

    return (
        PsiParty(Role.LEFT, config, li, progress=observer(Role.LEFT)),
        PsiParty(Role.RIGHT, config, ri, progress=observer(Role.RIGHT)),
    )


def exchange(a: PsiParty, b: PsiParty) -> list[bytes]:
    """Run both parties to completion; returns the transcript (every frame, in order)."""
    transcript: list[bytes] = []
    to_b = [to_wire(m) for m in a.start()]
    to_a = [to_wire(m) for m in b.start()]
    while to_a or to_b:
        if to_b:
            frame = to_b.pop(0)
            transcript.append(frame)
            to_a.extend(to_wire(m) for m in b.receive(from_wire(frame)))
        if to_a:
            frame = to_a.pop(0)
            transcript.append(frame)
            to_b.extend(to_wire(m) for m in a.receive(from_wire(frame)))
    assert a.done and b.done
    return transcript


def run(
    left: Sequence[Sequence[str | None]],
    right: Sequence[Sequence[str | None]],
    kinds: Sequence[KeyKind],
    reveal: Reveal,
    **kwargs: object,
) -> tuple[PsiResult, PsiResult, list[bytes]]:
    a, b = make_parties(left, right, kinds, reveal, **kwargs)  # type: ignore[arg-type]
    transcript = exchange(a, b)
    return a.result(), b.result(), transcript


def inputs_of(party: PsiParty) -> PartyInput:
    return party._data
