from datetime import UTC, datetime

import pytest

from parties import (
    BadEnvelope,
    EnvelopeGuard,
    NodeIdentity,
    NotApproved,
    ReplayedMessage,
    UnknownNode,
    seal,
)

pytestmark = pytest.mark.unit

BRAND, PARTNER, STRANGER = NodeIdentity.generate(), NodeIdentity.generate(), NodeIdentity.generate()
FIXED = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def guard(approved_jobs: set[str] = frozenset({"job-1"})) -> EnvelopeGuard:
    return EnvelopeGuard(
        me=PARTNER.fingerprint,
        peers={BRAND.fingerprint: BRAND.public_key},
        approved=lambda job, sender: job in approved_jobs and sender == BRAND.fingerprint,
    )


def envelope(seq: int = 0, job: str = "job-1", sender: NodeIdentity = BRAND, **kw: object) -> bytes:
    return seal(
        sender,
        recipient=kw.get("recipient", PARTNER.fingerprint),  # type: ignore[arg-type]
        job_id=job,
        seq=seq,
        kind="psi.batch",
        payload=kw.get("payload", b"frames"),  # type: ignore[arg-type]
        now=lambda: FIXED,
    )


def test_accepts_a_fresh_message_from_a_peer_for_an_approved_job() -> None:
    sealed = guard().accept(envelope())
    assert (sealed.job_id, sealed.seq, sealed.payload) == ("job-1", 0, b"frames")
    assert sealed.sender == BRAND.fingerprint and sealed.sent_at == FIXED.isoformat()


def test_replayed_and_old_sequence_numbers_are_refused() -> None:
    g = guard()
    g.accept(envelope(0))
    g.accept(envelope(1))
    with pytest.raises(ReplayedMessage):
        g.accept(envelope(1))
    with pytest.raises(ReplayedMessage):
        g.accept(envelope(0))


def test_unknown_node_unapproved_job_and_wrong_recipient() -> None:
    with pytest.raises(UnknownNode):
        guard().accept(envelope(sender=STRANGER))
    with pytest.raises(NotApproved):
        guard().accept(envelope(job="job-2"))
    with pytest.raises(BadEnvelope, match="another node"):
        guard().accept(envelope(recipient=STRANGER.fingerprint))


def test_tampering_is_one_opaque_error() -> None:
    data = envelope(payload=b"frames")
    tampered_payload = data[:-1] + b"X"
    with pytest.raises(BadEnvelope) as caught:
        guard().accept(tampered_payload)
    assert "frames" not in str(caught.value)
    tampered_header = data.replace(b'"seq":0', b'"seq":9')
    with pytest.raises(BadEnvelope, match="signature"):
        guard().accept(tampered_header)
    forged = envelope(sender=STRANGER).replace(
        STRANGER.fingerprint.encode(), BRAND.fingerprint.encode()
    )
    with pytest.raises(BadEnvelope, match="signature"):
        guard().accept(forged)


@pytest.mark.parametrize("bad", [b"", b"PECENV1", b"nonsense" * 20, b"PECENV1\x00\x00\x00\x05{}"])
def test_malformed_envelopes(bad: bytes) -> None:
    with pytest.raises(BadEnvelope):
        guard().accept(bad)
