"""TLS and SuperNode authentication material for a Flower deployment.

Flower's deployment engine secures the SuperNode → SuperLink link (and the ``flwr`` CLI's
Control API) with TLS, and can admit only SuperNodes whose public key the SuperLink operator has
registered (``flower-superlink --enable-supernode-auth`` + ``flwr supernode register``); each
SuperNode then signs its requests with its private key. This module makes that material:

* :func:`make_superlink_tls`: a CA for the brand's deployment and a SuperLink certificate signed
  by it for the names and addresses the SuperLink is reached at. The partner receives only the CA
  certificate (out of band, like a peer's public key) and verifies the SuperLink with it.
* :func:`make_supernode_key`: the partner's SuperNode key pair, an ECDSA P-384 key in OpenSSH
  format as Flower reads it. The brand registers the public half.

Private keys are written owner-only. Nothing here talks to the network.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "SuperLinkTls",
    "SuperNodeKey",
    "check_supernode_public_key",
    "make_superlink_tls",
    "make_supernode_key",
]


_NIST = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class SuperLinkTls:
    """Files of a SuperLink's TLS: the CA certificate others trust, its own certificate and key."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class SuperNodeKey:
    """A SuperNode's authentication key pair (OpenSSH format)."""

    private_key: Path
    public_key: Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def make_superlink_tls(
    folder: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost"), days: int = 365
) -> SuperLinkTls:
    """A fresh CA and a SuperLink certificate for ``hosts`` (IP addresses or DNS names).

    Writes ``ca.crt``, ``superlink.crt`` and ``superlink.key`` (owner-only) into ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PEC SuperLink CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    tls = SuperLinkTls(folder / "ca.crt", folder / "superlink.crt", folder / "superlink.key")
    tls.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        tls.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return tls


def make_supernode_key(folder: Path, name: str = "supernode") -> SuperNodeKey:
    """A fresh ECDSA P-384 key pair in OpenSSH format: ``name.key`` (owner-only), ``name.pub``."""
    key = ec.generate_private_key(ec.SECP384R1())
    pair = SuperNodeKey(folder / f"{name}.key", folder / f"{name}.pub")
    _write_private(
        pair.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    pair.public_key.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )
    return pair


def check_supernode_public_key(text: str) -> str:
    """The key text, stripped, if it is an OpenSSH ECDSA public key on a NIST curve.

    Raises:
        ValueError: it is not (Flower admits only such SuperNode keys).
    """
    text = text.strip()
    try:
        key = serialization.load_ssh_public_key(text.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not an OpenSSH public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _NIST:
        raise ValueError("a SuperNode key must be ECDSA on P-256, P-384 or P-521")
    return text
