"""The partner's side of a lookalike job behind the Flower relay: population in, audience out.

The partner's own process (``pec lookalike serve``) holds this object: its whole population
table, the protocol state (:class:`federated.lookalike.LookalikePartnerJob`) and, when the brand
has chosen, the audience, which it writes into the partner's own folder for activation. It moves
to the direct job stream exactly as a VFL job does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from federated.errors import ProtocolError
from federated.job import PartyTable
from federated.lookalike import CHUNK_ROWS, DEFAULT_MIN_CELL, LookalikePartnerJob
from federated.lookalike_artifacts import write_partner_audience
from federated.partner import PartnerConfig
from parties.vfl_job import VflRelayJob

__all__ = ["LookalikeRelayJob"]


class LookalikeRelayJob(VflRelayJob):
    """A relay job (see :class:`parties.relay_server.RelayJob`) for one approved lookalike job."""

    def __init__(
        self,
        job_id: str,
        population: PartyTable,
        out: Path,
        *,
        config: PartnerConfig | None = None,
        workers: int = 0,
        min_cell: int = DEFAULT_MIN_CELL,
        chunk_rows: int = CHUNK_ROWS,
        subjects: pd.Series | None = None,
    ) -> None:
        super().__init__(job_id, population, out, config=config, workers=workers)
        self.subjects = subjects
        """The partner's subject id of each population id value, written into the audience."""
        self._job = LookalikePartnerJob(
            job_id, population, config, workers, min_cell=min_cell, chunk_rows=chunk_rows
        )

    @property
    def partner_job(self) -> LookalikePartnerJob:
        """The protocol state (tests inspect it)."""
        assert isinstance(self._job, LookalikePartnerJob)
        return self._job

    def complete(self) -> dict[str, Any]:
        """Write the audience, the partner's part of the model and its summary.

        Raises:
            ProtocolError: the audience was refused; nothing is written.
        """
        job = self.partner_job
        if job.refusal is not None:
            raise ProtocolError(f"no audience: {job.refusal}")
        return write_partner_audience(job, self.out, self.subjects)
