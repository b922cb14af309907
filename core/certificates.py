"""Self-signed OPC UA application instance certificates (OPC 10000-6 6.2.2): an RSA 2048 key in
PEM and a DER certificate whose subject alternative names carry the application URI and host.

The key file is written with mode 600; an existing file is never overwritten.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from core.errors import PipelineError

ROLES = {"client": [ExtendedKeyUsageOID.CLIENT_AUTH], "server": [ExtendedKeyUsageOID.SERVER_AUTH]}


def create_certificate(
    cert_path: str | os.PathLike,
    key_path: str | os.PathLike,
    application_uri: str,
    role: str = "client",
    hosts: tuple[str, ...] = (),
    days: int = 365,
    common_name: str | None = None,
) -> tuple[Path, Path]:
    """Write a new key (PEM, mode 600) and self-signed certificate (DER); PipelineError if either exists."""
    from asyncua.crypto import cert_gen

    cert_path, key_path = Path(cert_path), Path(key_path)
    for path in (cert_path, key_path):
        if path.exists():
            raise PipelineError(f"{path} already exists: remove it or choose another path (certificates are never overwritten)")
    if role not in ROLES:
        raise PipelineError(f"certificate role must be one of {sorted(ROLES)}, got {role!r}")
    if not application_uri.startswith("urn:"):
        raise PipelineError(f"application URI must start with 'urn:', got {application_uri!r}")
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in hosts or (socket.gethostname(),):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(key, common_name or application_uri, {}, names, ROLES[role], days=days)
    for path in (cert_path, key_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    return cert_path, key_path


def thumbprint(cert_path: str | os.PathLike) -> str:
    """SHA-1 thumbprint of a PEM or DER certificate, as OPC UA servers show it in their trust lists."""
    from cryptography.hazmat.primitives import hashes

    data = Path(cert_path).read_bytes()
    cert = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_certificate(data)
    return cert.fingerprint(hashes.SHA1()).hex()
