"""The simulator's fleet served over OPC UA (`run_scheduler.py opcua-serve-sim`), for demos and tests.

Node ids: ns=2;s={compressor}.{signal}, Double values. The simulated clock runs at `speed` times
the wall clock from `start` (speed 1: the simulated time is the wall-clock time); each time it
crosses a sampling step every value is updated with that step as its source timestamp. The
fleet is simulated for `days` from `start` and replayed in a loop. A `bad_fraction` of values
is published with status BadSensorFailure. Security is the same [opcua] policy and mode the
collector uses; clients must present a certificate found in `trusted` and, when `users` is
given, a user name and password from it.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from core.settings import Settings
from simulation.fleet import simulate_fleet

log = logging.getLogger(__name__)
APPLICATION_URI = "urn:compressor-ad:simulator"
NAMESPACE = "urn:compressor-ad:simulator:fleet"
NODE_TEMPLATE = "ns=2;s={compressor}.{signal}"


@dataclass(frozen=True)
class SimServerOptions:
    host: str = "127.0.0.1"
    port: int = 4840
    compressors: int = 5
    seed: int = 7
    days: float = 1.0
    start: datetime | None = None  # default: today's UTC midnight
    speed: float = 1.0
    bad_fraction: float = 0.0
    certificate: Path | None = None
    private_key: Path | None = None
    trusted: tuple[Path, ...] = ()
    users: dict[str, str] | None = None  # user name -> password; None = anonymous allowed


class _Users:
    """Accepts only the configured user names with their passwords."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver, username=None, password=None, certificate=None):
        from asyncua.crypto.permission_rules import User, UserRole

        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


def _trusted_clients(paths: tuple[Path, ...]):
    """A validator: the usual checks (validity, application URI, key usage) and membership of the trust list."""
    from asyncua import ua
    from asyncua.common.utils import ServiceError
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    def der(path: Path) -> bytes:
        data = path.read_bytes()
        cert = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_certificate(data)
        return cert.public_bytes(Encoding.DER)

    trusted = {der(p) for p in paths}
    checks = CertificateValidator(CertificateValidatorOptions.EXT_VALIDATION | CertificateValidatorOptions.PEER_CLIENT)

    async def validate(certificate, description) -> None:
        await checks(certificate, description)
        if certificate.public_bytes(Encoding.DER) not in trusted:
            log.warning("refused client %s: its certificate is not trusted", description.ApplicationUri)
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    return validate


def simulated_time(start: datetime, speed: float, wall: float, interval_s: float) -> tuple[int, datetime]:
    """(step index since start, its timestamp) of the simulated clock at UNIX time `wall`."""
    elapsed = (wall - start.replace(tzinfo=timezone.utc).timestamp()) * speed
    step = math.floor(elapsed / interval_s)
    return step, start + timedelta(seconds=step * interval_s)


async def serve(settings: Settings, options: SimServerOptions, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set."""
    from asyncua import Server, ua

    opc, features, interval = settings.opcua, settings.data.features, settings.data.sampling_interval_s
    start = options.start or datetime.now(timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    fleet = simulate_fleet(options.compressors, options.days, start=start, seed=options.seed, interval_s=interval, features=features).telemetry
    ids = sorted(fleet["compressor_id"].unique())
    values = {cid: fleet.loc[fleet["compressor_id"] == cid, list(features)].to_numpy(dtype=np.float64) for cid in ids}
    steps = min(len(v) for v in values.values())

    server = Server(user_manager=_Users(options.users) if options.users else None)
    await server.init()
    server.set_endpoint(f"opc.tcp://{options.host}:{options.port}/")
    server.set_server_name("compressor-ad fleet simulator")
    await server.set_application_uri(APPLICATION_URI)
    if opc.insecure:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    else:
        server.set_security_policy([getattr(ua.SecurityPolicyType, f"{opc.security_policy}_{opc.security_mode}")])
        await server.load_certificate(str(options.certificate))
        await server.load_private_key(str(options.private_key))
        server.set_certificate_validator(_trusted_clients(options.trusted))
    server.set_identity_tokens([ua.UserNameIdentityToken] if options.users else [ua.AnonymousIdentityToken])
    idx = await server.register_namespace(NAMESPACE)
    nodes: dict[str, list] = {}
    for cid in ids:
        folder = await server.nodes.objects.add_object(idx, cid)
        nodes[cid] = [await folder.add_variable(ua.NodeId(f"{cid}.{signal}", idx), signal, 0.0, varianttype=ua.VariantType.Double) for signal in features]
    rng = np.random.default_rng(options.seed)
    bad_status = ua.StatusCode(ua.StatusCodes.BadSensorFailure)
    good_status = ua.StatusCode(ua.StatusCodes.Good)

    async def publish(step: int, stamp: datetime) -> None:
        now = datetime.now(timezone.utc)
        source = stamp.replace(tzinfo=timezone.utc)
        for cid in ids:
            row = values[cid][step % steps]
            bad = rng.random(len(features)) < options.bad_fraction
            for node, value, is_bad in zip(nodes[cid], row, bad):
                dv = ua.DataValue(ua.Variant(float(value), ua.VariantType.Double), StatusCode=bad_status if is_bad else good_status,
                                  SourceTimestamp=source, ServerTimestamp=now)
                await server.write_attribute_value(node.nodeid, dv)

    async with server:
        last = None
        log.info("serving %d compressors x %d signals at opc.tcp://%s:%d/ (%s, %s); node ids %s; simulated clock from %s at %gx",
                 len(ids), len(features), options.host, options.port, opc.security_policy, opc.security_mode, NODE_TEMPLATE, start, options.speed)
        if ready is not None:
            ready.set()
        period = interval / options.speed
        while not stop.is_set():
            step, stamp = simulated_time(start, options.speed, time.time(), interval)
            if step != last and step >= 0:
                await publish(step, stamp)
                last = step
            next_wall = start.replace(tzinfo=timezone.utc).timestamp() + (step + 1) * period
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, next_wall - time.time()))
            except asyncio.TimeoutError:
                pass
    log.info("simulator server stopped")
