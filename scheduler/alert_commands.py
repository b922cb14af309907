"""`alerts list|ack|close|send` and `maintenance add|list|remove`: the alert life cycle from the command line.

Each command is one short transaction; an unknown id or a closed episode ends it with exit 1
and one line. Every printed cell is escaped (a compressor id or note cannot forge a row).
"""
from __future__ import annotations

import json
import logging

from core.errors import PipelineError
from core.logs import printable
from core.settings import Settings
from db.alert_schema import EPISODE_STATES

log = logging.getLogger("compressor_ad")


def _db(settings: Settings):
    from db.engine import make_engine
    from db.schema import build_tables, create_all

    engine, tables = make_engine(settings.db_url), build_tables(settings)
    create_all(engine, tables, include_source=False)
    return engine, tables


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def format_episodes(rows: list[dict]) -> str:
    header = f"{'id':>6}  {'compressor':<12} {'state':<12} {'started':<19}  {'ended':<19}  {'peak':>9}  {'acknowledged by':<16} top signals"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['id']:>6}  {printable(r['compressor_id'], 64):<12} {r['state']:<12} {_when(r['start_time']):<19}  {_when(r['end_time']):<19}  "
            f"{r['peak_score']:>9.3g}  {printable(r['acknowledged_by'] or '-', 40):<16} {printable(r['top_features'] or '-', 200)}"
        )
    return "\n".join(lines)


def cmd_alerts(args, settings: Settings) -> int:
    from db import alerts as store
    from core.clock import utcnow

    engine, tables = _db(settings)
    try:
        if args.alerts_command == "list":
            with engine.connect() as conn:
                rows = store.list_episodes(conn, tables, args.state, args.compressor, args.limit)
            print(json.dumps(rows, default=str, indent=1) if args.json else format_episodes(rows))
            return 0
        if args.alerts_command == "send":
            from scheduler.notifier import deliver

            report = deliver(engine, tables, settings)
            if report is None:
                raise PipelineError("no notification channel is configured ([notify] webhook_url or smtp_host)")
            print(f"{report.sent} sent, {report.failed} failed, {report.skipped} claimed by another sender")
            return 0 if not report.failed else 1
        state = "acknowledged" if args.alerts_command == "ack" else "closed"
        by = getattr(args, "by", None)
        with engine.begin() as conn:
            row = store.set_state(conn, tables, args.id, state, by, args.note, utcnow())
        log.info("alert episode %d (compressor %s, started %s) %s%s", args.id, printable(row["compressor_id"], 64), _when(row["start_time"]), state, f" by {printable(by, 100)}" if by else "")
        print(f"episode {args.id} {state}")
        return 0
    finally:
        engine.dispose()


def cmd_maintenance(args, settings: Settings) -> int:
    from db import alerts as store
    from core.clock import utcnow

    engine, tables = _db(settings)
    try:
        if args.maintenance_command == "add":
            with engine.begin() as conn:
                window_id = store.add_maintenance(conn, tables, args.compressor, args.start, args.end, args.reason, utcnow())
            log.info("maintenance window %d added: compressor %s, %s .. %s (windows already scored are rewritten only by a backfill)", window_id, printable(args.compressor, 64), _when(args.start), _when(args.end))
            print(window_id)
        elif args.maintenance_command == "remove":
            with engine.begin() as conn:
                store.remove_maintenance(conn, tables, args.id)
            print(f"maintenance window {args.id} removed")
        else:
            with engine.connect() as conn:
                rows = store.list_maintenance(conn, tables)
            header = f"{'id':>6}  {'compressor':<12} {'start':<19}  {'end':<19}  reason"
            print("\n".join([header, "-" * len(header)] + [
                f"{r['id']:>6}  {printable(r['compressor_id'], 64):<12} {_when(r['starts_at']):<19}  {_when(r['ends_at']):<19}  {printable(r['reason'], 200)}" for r in rows
            ]))
        return 0
    finally:
        engine.dispose()


def add_parsers(sub, iso_datetime) -> None:
    """The two command groups, added to the main parser's subcommands."""
    p = sub.add_parser("alerts", help="alert episodes: list, acknowledge, close; send pending notifications")
    asub = p.add_subparsers(dest="alerts_command", required=True)
    q = asub.add_parser("list", help="episodes, newest first")
    q.add_argument("--state", choices=EPISODE_STATES)
    q.add_argument("--compressor", metavar="ID")
    q.add_argument("--limit", type=int, default=1000)
    q.add_argument("--json", action="store_true")
    q = asub.add_parser("ack", help="acknowledge an episode (someone is on it)")
    q.add_argument("id", type=int)
    q.add_argument("--by", required=True, metavar="NAME")
    q.add_argument("--note", metavar="TEXT")
    q = asub.add_parser("close", help="close an episode (handled)")
    q.add_argument("id", type=int)
    q.add_argument("--by", metavar="NAME")
    q.add_argument("--note", metavar="TEXT")
    asub.add_parser("send", help="deliver the pending notifications now (a run does this after its batches)")
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("maintenance", help="maintenance windows: no episode opens and nobody is notified inside one")
    msub = p.add_subparsers(dest="maintenance_command", required=True)
    q = msub.add_parser("add", help="add a window (applies to windows scored from now on, or rescored by a backfill)")
    q.add_argument("--compressor", required=True, metavar="ID")
    q.add_argument("--start", type=iso_datetime, required=True)
    q.add_argument("--end", type=iso_datetime, required=True)
    q.add_argument("--reason", required=True, metavar="TEXT")
    msub.add_parser("list", help="all windows")
    q = msub.add_parser("remove", help="remove a window")
    q.add_argument("id", type=int)
    p.set_defaults(func=cmd_maintenance)
