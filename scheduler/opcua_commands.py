"""Command line of the OPC UA collector: `collect`, `opcua-serve-sim` and `opcua-cert`."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from datetime import datetime, timezone
from pathlib import Path

from core.errors import PipelineError
from core.settings import Settings

log = logging.getLogger("compressor_ad")


def _stop_event_on_signals(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the command then finishes its step and exits 0."""
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C still raises KeyboardInterrupt
            pass
    return stop


def _quiet_library_logs() -> None:
    """asyncua logs every request at INFO; operators need its warnings only."""
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLogger().level))


def cmd_collect(args, settings: Settings) -> int:
    from db.engine import make_engine, safe_url
    from db.schema import build_tables
    from pipeline.collector import Collector
    from pipeline.opcua_source import OpcUaSource, opcua_password
    from pipeline.spool import Spool

    _quiet_library_logs()
    opc = settings.opcua
    if not opc.endpoint:
        raise PipelineError("[opcua] endpoint is not set: give the server's opc.tcp:// URL in the config file")
    if not opc.compressors and not opc.nodes:
        raise PipelineError("[opcua] has no node map: set compressors and node_template, or [opcua.nodes.ID] tables")
    interval = args.interval or opc.sampling_interval_s or settings.data.sampling_interval_s
    if interval <= 0:
        raise PipelineError("--interval must be > 0 seconds")
    if opc.insecure:
        log.warning("OPC UA security is None (allow_insecure = true): telemetry travels unsigned and unencrypted")
    source = OpcUaSource(settings, opcua_password(settings))
    spool = Spool(opc.spool_path, opc.spool_max_rows)
    engine = make_engine(settings.db_url)
    collector = Collector(settings, engine, build_tables(settings), source, spool, interval)
    log.info("collect: %d compressors x %d signals from %s every %g s into %s (%s); spool %s holds %d rows",
             len({c for c, _, _ in source.nodes}), len(settings.data.features), opc.endpoint, interval, settings.source.table, safe_url(settings.db_url), spool.path, len(spool))

    async def main() -> None:
        stop = _stop_event_on_signals(asyncio.get_running_loop())
        await collector.run(stop, once=args.once)

    try:
        asyncio.run(main())
    except ConnectionError as exc:
        raise PipelineError(str(exc)) from None
    finally:
        log.info("collect: %s", collector.report.summary())
        engine.dispose()
    return 0


def cmd_opcua_serve_sim(args, settings: Settings) -> int:
    from simulation.opcua_server import SimServerOptions, serve

    _quiet_library_logs()
    opc = settings.opcua
    users = None
    if args.username:
        password = os.environ.get(opc.password_env)
        if args.password_file:
            try:
                password = Path(args.password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise PipelineError(f"cannot read --password-file {args.password_file}: {exc.strerror}") from None
        if not password:
            raise PipelineError(f"--username needs a password: --password-file or ${opc.password_env}")
        users = {args.username: password}
    if not opc.insecure:
        for label, path in (("--certificate", args.certificate), ("--private-key", args.private_key)):
            if not path or not Path(path).is_file():
                raise PipelineError(f"{label} {path or 'FILE'} is needed: create the server's pair with `opcua-cert --role server`")
        if not args.trust:
            raise PipelineError("--trust CLIENT_CERT is needed (the client certificates allowed to connect)")
        for path in args.trust:
            if not Path(path).is_file():
                raise PipelineError(f"--trust {path} not found")
    options = SimServerOptions(
        host=args.host, port=args.port, compressors=args.compressors, seed=args.seed, days=args.days, start=args.start,
        speed=args.speed, bad_fraction=args.bad_fraction,
        certificate=Path(args.certificate) if args.certificate else None, private_key=Path(args.private_key) if args.private_key else None,
        trusted=tuple(Path(p) for p in args.trust), users=users,
    )

    async def main() -> None:
        await serve(settings, options, _stop_event_on_signals(asyncio.get_running_loop()))

    try:
        asyncio.run(main())
    except OSError as exc:
        raise PipelineError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0


def cmd_opcua_cert(args, settings: Settings) -> int:
    from core.certificates import create_certificate, thumbprint

    opc = settings.opcua
    if args.role == "client":
        cert, key, uri = args.certificate or opc.certificate, args.private_key or opc.private_key, args.application_uri or opc.application_uri
    else:
        if not (args.certificate and args.private_key):
            raise PipelineError("--role server needs --certificate and --private-key paths")
        cert, key, uri = args.certificate, args.private_key, args.application_uri or "urn:compressor-ad:simulator"
    hosts = tuple(dict.fromkeys([socket.gethostname(), *args.host]))
    create_certificate(cert, key, uri, args.role, hosts, args.days)
    print(f"certificate {cert} (DER, {args.role}, {uri}, valid {args.days} days, SHA-1 thumbprint {thumbprint(cert)})")
    print(f"private key {key} (PEM, mode 600: keep it on this host)")
    return 0


def _iso(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def add_parsers(sub) -> None:
    """The three commands, added to the main parser's subcommands."""
    p = sub.add_parser("collect", help="poll the OPC UA server of [opcua] and write its telemetry to the source table")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one poll, write it, exit")
    mode.add_argument("--interval", type=float, metavar="SECONDS", help="poll every SECONDS until SIGTERM (default: [opcua] sampling_interval_s, else [data] sampling_interval_s)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("opcua-serve-sim", help="serve the simulated fleet as an OPC UA server (demo and tests)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4840)
    p.add_argument("--compressors", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--days", type=float, default=1.0, help="length of the simulated fleet, replayed in a loop")
    p.add_argument("--start", type=_iso, help="simulated clock origin (default today's UTC midnight)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall-clock second (1: the simulated time is the wall-clock time)")
    p.add_argument("--bad-fraction", type=float, default=0.0, help="share of values published with status BadSensorFailure")
    p.add_argument("--certificate", help="server certificate (DER or PEM)")
    p.add_argument("--private-key", help="server private key (PEM)")
    p.add_argument("--trust", action="append", default=[], metavar="CLIENT_CERT", help="a client certificate allowed to connect (repeatable)")
    p.add_argument("--username", help="require this user; password from --password-file or [opcua] password_env")
    p.add_argument("--password-file")
    p.set_defaults(func=cmd_opcua_serve_sim)

    p = sub.add_parser("opcua-cert", help="create a self-signed OPC UA application certificate and key (first installation)")
    p.add_argument("--role", choices=["client", "server"], default="client")
    p.add_argument("--certificate", help="certificate path (default: [opcua] certificate)")
    p.add_argument("--private-key", help="key path (default: [opcua] private_key)")
    p.add_argument("--application-uri", help="default: [opcua] application_uri")
    p.add_argument("--host", action="append", default=[], help="extra DNS name or IP in the certificate (repeatable)")
    p.add_argument("--days", type=int, default=730)
    p.set_defaults(func=cmd_opcua_cert)
