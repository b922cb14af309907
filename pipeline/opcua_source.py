"""An OPC UA session to the plant: security from [opcua], one Read of every mapped node per poll.

Security: the configured policy (Basic256Sha256 or stronger) and mode (SignAndEncrypt by default)
with the client's application instance certificate; the server's certificate must be one of
`server_certificates`. "None" is possible only with allow_insecure = true (settings refuse it
otherwise). Failures are sorted into ConfigurationRefused (the server or the settings say no:
retrying cannot help) and the rest (the server is unreachable or went away: reconnect).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from core.certificates import thumbprint
from core.errors import PipelineError
from core.settings import Settings, opcua_node_map

log = logging.getLogger(__name__)
READ_CHUNK = 1000  # nodes per Read request (below the usual server MaxNodesPerRead)


class ConfigurationRefused(PipelineError):
    """The server refused the certificate, the user or the security settings."""


@dataclass(frozen=True)
class Sample:
    """One node's reading: the value when its status is Good and it is a finite number, else None."""

    value: float | None
    status: str
    timestamp: datetime | None  # naive UTC: source timestamp (server as fallback) or server timestamp


def opcua_password(settings: Settings, env: Mapping[str, str] | None = None) -> str | None:
    """The user's password: from password_file, else from the variable named by password_env."""
    opc = settings.opcua
    if not opc.username:
        return None
    env = os.environ if env is None else env
    if opc.password_file:
        try:
            password = Path(opc.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PipelineError(f"cannot read [opcua] password_file {opc.password_file}: {exc.strerror}") from None
        if not password:
            raise PipelineError(f"[opcua] password_file {opc.password_file} is empty")
        return password
    if env.get(opc.password_env):
        return env[opc.password_env]
    raise PipelineError(f"[opcua] username {opc.username!r} needs a password: set password_file or ${opc.password_env}")


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


class OpcUaSource:
    """Connects, reads every mapped node, disconnects; `nodes` is [(compressor, signal, NodeId text)]."""

    def __init__(self, settings: Settings, password: str | None) -> None:
        self.settings = settings
        self.password = password
        self.nodes = [(cid, signal, nodeid) for cid, signals in opcua_node_map(settings).items() for signal, nodeid in signals.items()]
        self.client = None
        self._read_ids: list = []

    async def connect(self) -> None:
        """Open a secure session; ConfigurationRefused with a one-line reason when it is refused."""
        from asyncua import Client, ua

        opc = self.settings.opcua
        client = Client(opc.endpoint, timeout=opc.request_timeout_s)
        client.application_uri = opc.application_uri
        client.name = client.description = "compressor-ad collector"
        if not opc.insecure:
            await self._secure(client)
        if opc.username:
            client.set_user(opc.username)
            client.set_password(self.password or "")
        try:
            await client.connect()
        except Exception as exc:  # noqa: BLE001 - sorted into refused / unreachable below
            raise self._explain(exc) from exc
        try:
            self._read_ids = [ua.NodeId.from_string(nodeid) for _, _, nodeid in self.nodes]
        except Exception as exc:  # noqa: BLE001 - asyncua raises several types for a malformed NodeId
            await client.disconnect()
            raise ConfigurationRefused(f"[opcua] node map holds a malformed NodeId: {exc}") from None
        self.client = client
        log.info("connected to %s (%s, %s) for %d nodes", opc.endpoint, opc.security_policy, opc.security_mode, len(self.nodes))

    async def _secure(self, client) -> None:
        from asyncua import ua
        from asyncua.crypto import security_policies

        opc = self.settings.opcua
        for label, path in (("certificate", opc.certificate), ("private_key", opc.private_key)):
            if not Path(path).is_file():
                raise ConfigurationRefused(f"[opcua] {label} {path} not found: create one with `run_scheduler.py opcua-cert`")
        if not opc.server_certificates:
            raise ConfigurationRefused("[opcua] server_certificates is empty: copy the server's certificate here and list it (see README, From OPC UA)")
        missing = [p for p in opc.server_certificates if not Path(p).is_file()]
        if missing:
            raise ConfigurationRefused(f"[opcua] server certificate {missing[0]} not found")
        policy = getattr(security_policies, f"SecurityPolicy{opc.security_policy}")
        mode = getattr(ua.MessageSecurityMode, opc.security_mode)
        trusted = {_der(p): p for p in opc.server_certificates}
        offered = await self._offered_certificate(mode, policy.URI)
        server_cert = trusted.get(offered)
        if server_cert is None:
            raise ConfigurationRefused(
                f"the server at {opc.endpoint} presents a certificate (thumbprint {_sha1(offered)}) that is not in [opcua] server_certificates: check it with the plant, then add it"
            )
        await client.set_security(policy, opc.certificate, opc.private_key, server_certificate=server_cert, mode=mode)

        async def validate(certificate, _description) -> None:
            from cryptography.hazmat.primitives.serialization import Encoding

            if certificate.public_bytes(Encoding.DER) not in trusted:
                raise ConfigurationRefused(f"the server at {opc.endpoint} presents a certificate that is not in [opcua] server_certificates")

        client.certificate_validator = validate

    async def _offered_certificate(self, mode, policy_uri: str) -> bytes:
        """The certificate the server offers on the configured endpoint (GetEndpoints, which OPC UA
        answers on an unsecured channel; nothing but the endpoint list is exchanged on it)."""
        from asyncua import Client

        probe = Client(self.settings.opcua.endpoint, timeout=self.settings.opcua.request_timeout_s)
        try:
            endpoints = await probe.connect_and_get_server_endpoints()
        except Exception as exc:  # noqa: BLE001
            raise self._explain(exc) from exc
        for endpoint in endpoints:
            if endpoint.SecurityMode == mode and endpoint.SecurityPolicyUri == policy_uri:
                return _first_certificate(endpoint.ServerCertificate)
        raise ConfigurationRefused(f"the server at {self.settings.opcua.endpoint} offers no {self.settings.opcua.security_policy}/{self.settings.opcua.security_mode} endpoint")

    def _explain(self, exc: Exception) -> Exception:
        """A one-line reason: ConfigurationRefused when retrying cannot help, else the original error."""
        from asyncua import ua

        opc = self.settings.opcua
        if isinstance(exc, ConfigurationRefused):
            return exc
        name = type(exc).__name__
        if name == "BadCertificateUntrusted" or name.startswith("BadCertificate"):
            return ConfigurationRefused(
                f"the server at {opc.endpoint} rejected the client certificate {opc.certificate} ({name}, thumbprint {thumbprint(opc.certificate)}): add it to the server's trusted certificates"
            )
        if name in ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"):
            who = f"user {opc.username!r}" if opc.username else "anonymous access"
            return ConfigurationRefused(f"the server at {opc.endpoint} refused {who} ({name}): check the user name and password")
        if name in ("BadSecurityPolicyRejected", "BadSecurityModeRejected", "BadSecurityChecksFailed"):
            return ConfigurationRefused(f"the server at {opc.endpoint} refused the secure channel ({name}): check security_policy, security_mode and that the server's certificate is the trusted one")
        if isinstance(exc, ua.UaError) and ("No matching endpoints" in str(exc) or "mismatch" in str(exc)):
            return ConfigurationRefused(f"the server at {opc.endpoint}: {str(exc).splitlines()[0]} (security_policy {opc.security_policy}, mode {opc.security_mode})")
        return exc

    async def read(self) -> list[Sample]:
        """One Read (in chunks of READ_CHUNK nodes) of every mapped node's Value, both timestamps."""
        from asyncua import ua

        use_server = self.settings.opcua.timestamp == "server"
        samples: list[Sample] = []
        for start in range(0, len(self._read_ids), READ_CHUNK):
            params = ua.ReadParameters()
            params.MaxAge = 0
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            for nodeid in self._read_ids[start : start + READ_CHUNK]:
                params.NodesToRead.append(ua.ReadValueId(NodeId=nodeid, AttributeId=ua.AttributeIds.Value))
            for dv in await self.client.uaclient.read(params):
                samples.append(_sample(dv, use_server))
        return samples

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                await client.disconnect()
            except Exception:  # noqa: BLE001 - the server may already be gone
                log.debug("disconnect failed", exc_info=True)


def _sample(dv, use_server: bool) -> Sample:
    status = dv.StatusCode
    name = "Good" if status is None or status.is_good() else status.name
    value = dv.Value.Value if dv.Value is not None else None
    number = None
    if name == "Good" and isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            number, name = None, "NotFinite"
    elif name == "Good":
        name = "NotANumber"
    stamp = dv.ServerTimestamp if use_server else (dv.SourceTimestamp or dv.ServerTimestamp)
    return Sample(number, name, _naive_utc(stamp))


def _first_certificate(der: bytes) -> bytes:
    """The leaf of a DER chain (servers may send the chain): the outer SEQUENCE's length says where it ends."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    length = int.from_bytes(der[2:4], "big") + 4 if der[1] == 0x82 else len(der)
    return x509.load_der_x509_certificate(der[:length]).public_bytes(Encoding.DER)


def _sha1(der: bytes) -> str:
    import hashlib

    return hashlib.sha1(der).hexdigest()  # noqa: S324 - the thumbprint OPC UA tools display, not a security check


def _der(path: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = Path(path).read_bytes()
    cert = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_certificate(data)
    return cert.public_bytes(Encoding.DER)
