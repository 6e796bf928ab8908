"""The partner's side of a VFL job behind the Flower relay: its own tables in, its own model out.

The partner's long-running process (``pec vfl serve``) holds this object: it reads the partner's
tables, answers the brand's requests through :class:`federated.job.PartnerJob`, and, when the
brand ends the job, writes the partner's part of the models into the partner's own folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from federated.artifacts import write_partner_outputs
from federated.errors import ProtocolError
from federated.job import PartnerJob, PartyTable, pack, unpack
from federated.partner import PartnerConfig
from parties.stream import dial, ephemeral_certificate

__all__ = ["VflRelayJob"]


class VflRelayJob:
    """A relay job (see :class:`parties.relay_server.RelayJob`) for one approved VFL job."""

    def __init__(
        self,
        job_id: str,
        train: PartyTable,
        out: Path,
        *,
        test: PartyTable | None = None,
        config: PartnerConfig | None = None,
        workers: int = 0,
    ) -> None:
        self.job_id = job_id
        self.out = out
        self.timeout = 3600.0
        self._job = PartnerJob(job_id, train, test, config, workers)
        self._streaming = False
        self.on_finished: Callable[[BaseException | None], None] | None = None
        """Set by the relay server: called when the job ends on the direct stream."""

    @property
    def partner_job(self) -> PartnerJob:
        """The protocol state (tests inspect it)."""
        return self._job

    def answer(self, body: bytes) -> bytes:
        """One reply of the partner's side; a stream offer moves the job to a direct stream."""
        op, header, _ = unpack(body)
        if op != "stream":
            return self._job.answer(body)
        if header.get("job") != self.job_id:
            raise ProtocolError("message for another job")
        if self._streaming or self.on_finished is None:
            raise ProtocolError("this job cannot move to a stream now")
        self._streaming = True
        cert, key = ephemeral_certificate()
        dial(
            header,
            cert,
            key,
            self._job.answer,
            done=lambda: self._job.done,
            finished=self.on_finished,
            timeout=self.timeout,
        )
        return pack("stream", {"job": self.job_id, "cert": cert.decode("ascii")})

    @property
    def done(self) -> bool:
        """True once the brand ended the job."""
        return self._job.done

    def complete(self) -> dict[str, Any]:
        """Write the partner's part of the models."""
        return write_partner_outputs(self._job, self.out)

    def abandon(self) -> None:
        """Release workers; nothing is written."""
        self._job.close()
