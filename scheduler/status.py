"""Fleet status: per compressor, checkpoint, rows waiting, the last batch, a lease held now, open alert episodes,
unsent notifications and whether its threshold still holds (scheduler/threshold_health.py, promoted model).

The table escapes every value (a compressor id with a newline cannot forge a row).
"""
from __future__ import annotations

import sqlalchemy as sa

from core.clock import utcnow
from core.errors import ModelArtifactError
from core.logs import printable
from core.settings import Settings
from db.alerts import open_episode_counts, pending_counts
from db.results import read_checkpoints
from db.schema import Tables
from db.source import count_rows_after, list_compressors
from models.artifacts import current_version, read_metadata
from scheduler.threshold_health import ThresholdHealth, assess


def fleet_status(engine: sa.Engine, tables: Tables, settings: Settings) -> list[dict]:
    """One dict per compressor found in the source table or the checkpoint table."""
    inspector = sa.inspect(engine)
    with engine.connect() as conn:
        has_results = inspector.has_table(tables.checkpoint.name)
        checkpoints = read_checkpoints(conn, tables) if has_results else {}
        leases = _live_leases(conn, tables) if has_results else {}
        has_alerts = inspector.has_table(tables.alerts.notifications.name)
        episodes = open_episode_counts(conn, tables) if has_alerts else {}
        unsent = pending_counts(conn, tables) if has_alerts else {}
        compressors = sorted(set(list_compressors(conn, tables, settings)) | set(checkpoints))
    health = _threshold_health(engine, tables, settings, compressors) if has_results else {}
    with engine.connect() as conn:
        rows = []
        summary = tables.summary
        for cid in compressors:
            ckpt = checkpoints.get(cid)
            last = None
            if has_results:
                last = conn.execute(
                    sa.select(summary.c.batch_id, summary.c.mode, summary.c.status, summary.c.windows_scored, summary.c.triggered_events, summary.c.finished_at, summary.c.message)
                    .where(summary.c.compressor_id == cid)
                    .order_by(summary.c.finished_at.desc(), summary.c.id.desc())
                    .limit(1)
                ).mappings().first()
            rows.append(
                {
                    "compressor_id": cid,
                    "checkpoint": ckpt.last_timestamp if ckpt else None,
                    "rows_waiting": count_rows_after(conn, tables, settings, cid, ckpt.last_timestamp if ckpt else None),
                    "last_batch": dict(last) if last else None,
                    "lease": leases.get(cid),
                    "open_episodes": episodes.get(cid, 0),
                    "notifications": unsent.get(cid, {"pending": 0, "failing": 0, "last_error": None}),
                    "threshold": _health_dict(health.get(cid)),
                }
            )
    return rows


def _threshold_health(engine: sa.Engine, tables: Tables, settings: Settings, compressors: list[str]) -> dict[str, ThresholdHealth]:
    """The promoted model's threshold check per compressor; empty when no model is promoted yet."""
    try:
        version = current_version(settings.model_dir)
        calibration = read_metadata(settings.model_dir, version).get("calibration", {})
    except ModelArtifactError:
        return {}
    return {h.compressor_id: h for h in assess(engine, tables, settings, version, calibration, compressors)}


def _health_dict(health: ThresholdHealth | None) -> dict | None:
    if health is None:
        return None
    return {
        "model_version": health.model_version, "hours": health.hours, "windows": health.windows, "above": health.flagged,
        "rate": round(health.rate, 6), "calibrated_rate": health.calibrated_rate, "holds": health.holds, "cell": health.cell(),
    }


def _live_leases(conn: sa.Connection, tables: Tables) -> dict[str, dict]:
    """compressor -> {"owner", "expires_at"} for leases not yet expired."""
    table = tables.checkpoint
    rows = conn.execute(
        sa.select(table.c.compressor_id, table.c.lease_owner, table.c.lease_expires_at).where(
            table.c.lease_owner.is_not(None), table.c.lease_expires_at >= utcnow()
        )
    )
    return {cid: {"owner": owner, "expires_at": expires} for cid, owner, expires in rows}


def format_status(rows: list[dict]) -> str:
    """A fixed-width table for terminals; every cell escaped and clipped."""
    header = (
        f"{'compressor':<12} {'checkpoint':<20} {'waiting':>8}  {'last batch':<26} {'status':<12} {'windows':>8} {'alerts':>6}  "
        f"{'above threshold':<17} lease"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        last = row["last_batch"] or {}
        checkpoint = row["checkpoint"].strftime("%Y-%m-%d %H:%M:%S") if row["checkpoint"] else "-"
        held = row.get("lease")
        lease_text = f"{printable(held['owner'], 100)} until {held['expires_at']:%Y-%m-%d %H:%M:%S}" if held else "-"
        lines.append(
            f"{printable(row['compressor_id'], 64):<12} {checkpoint:<20} {row['rows_waiting']:>8}  {printable(last.get('batch_id', '-'), 26):<26} "
            f"{printable(last.get('status', '-'), 12):<12} {str(last.get('windows_scored', '-')):>8} {str(last.get('triggered_events', '-')):>6}  "
            f"{(row.get('threshold') or {}).get('cell', '-'):<17} {lease_text}"
        )
    pending = sum(row.get("notifications", {}).get("pending", 0) for row in rows)
    if pending:
        failing = [row for row in rows if row["notifications"]["failing"]]
        text = f"notifications: {pending} unsent"
        if failing:
            text += f", {sum(r['notifications']['failing'] for r in failing)} failing (last error: {printable(failing[-1]['notifications']['last_error'], 300)})"
        lines.append(text)
    drifted = [row for row in rows if (row.get("threshold") or {}).get("holds") is False]
    if drifted:
        names = ", ".join(printable(row["compressor_id"], 64) for row in drifted)
        lines.append(
            f"thresholds that no longer hold ('!': share of the last {drifted[0]['threshold']['hours']:g} h's windows above the threshold, "
            f"calibrated share in brackets): {names}; unless these run abnormally, run `run_scheduler.py calibrate` on a normal period"
        )
    episodes = sum(row.get("open_episodes", 0) for row in rows)
    if episodes:
        lines.append(f"alert episodes not closed: {episodes} (run_scheduler.py alerts list)")
    return "\n".join(lines)
