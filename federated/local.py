"""In-process transport: run a brand and a partner role against each other in one process.

Every message makes a wire round trip (``to_wire`` -> bytes -> ``from_wire``), so what the roles
exchange here is byte for byte what a real transport would carry; the bytes can be recorded for
an audit. No I/O: this is the in-memory twin of the Flower transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from federated.brand import BrandTrainer
from federated.messages import Message
from federated.partner import PartnerTrainer
from federated.wire import from_wire, to_wire


@dataclass
class Transcript:
    """Every cross-party message of a run, as ``(direction, bytes)``."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Bytes exchanged in both directions."""
        return sum(len(m) for _, m in self.messages)


def run_in_process(
    brand: BrandTrainer, partner: PartnerTrainer, transcript: Transcript | None = None
) -> Transcript:
    """Drive both roles until the brand finishes; return the transcript.

    Raises:
        federated.errors.FederatedError: a role refused a message.
    """
    record = transcript if transcript is not None else Transcript()
    message: Message = brand.start()
    try:
        while True:
            data = to_wire(message)
            record.messages.append(("brand->partner", data))
            reply = partner.handle(from_wire(data))
            back = to_wire(reply)
            record.messages.append(("partner->brand", back))
            nxt = brand.handle(from_wire(back))
            if nxt is None:
                return record
            message = nxt
    finally:
        brand.close()
        partner.close()
