"""Writing results and moving checkpoints, always inside the caller's transaction."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from core.clock import utcnow
from db import bulk
from db.schema import Tables


@dataclass(frozen=True)
class Checkpoint:
    """Where a compressor's live scoring stands."""

    compressor_id: str
    last_timestamp: datetime | None
    consecutive_count: int = 0
    model_version: str | None = None
    alarm_state: str | None = None  # models/alarms.py AlarmState, encoded; None in rows of older releases


def _checkpoint(row) -> Checkpoint:
    return Checkpoint(row["compressor_id"], row["last_timestamp"], int(row["consecutive_count"] or 0), row["model_version"], row["alarm_state"])


def read_checkpoint(conn: sa.Connection, tables: Tables, compressor_id: str) -> Checkpoint:
    row = conn.execute(sa.select(tables.checkpoint).where(tables.checkpoint.c.compressor_id == compressor_id)).mappings().first()
    return Checkpoint(compressor_id, None) if row is None else _checkpoint(row)


def read_checkpoints(conn: sa.Connection, tables: Tables) -> dict[str, Checkpoint]:
    return {r["compressor_id"]: _checkpoint(r) for r in conn.execute(sa.select(tables.checkpoint)).mappings()}


def save_checkpoint(conn: sa.Connection, tables: Tables, checkpoint: Checkpoint) -> None:
    """Insert or update one compressor's checkpoint (portable: update, then insert if absent)."""
    values = {
        "last_timestamp": checkpoint.last_timestamp,
        "consecutive_count": checkpoint.consecutive_count,
        "alarm_state": checkpoint.alarm_state,
        "model_version": checkpoint.model_version,
        "updated_at": utcnow(),
    }
    table = tables.checkpoint
    updated = conn.execute(sa.update(table).where(table.c.compressor_id == checkpoint.compressor_id).values(**values))
    if updated.rowcount == 0:
        conn.execute(sa.insert(table).values(compressor_id=checkpoint.compressor_id, **values))


def insert_frame(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Bulk insert a frame whose columns are a subset of the table's, in the caller's transaction.

    PostgreSQL (psycopg 3): binary COPY; SQLite, MariaDB/MySQL: executemany of plain rows;
    SQL Server and others: SQLAlchemy executemany (fast_executemany on pyodbc). See db/bulk.py.
    """
    if frame.empty:
        return 0
    backend, driver = conn.dialect.name, conn.dialect.driver
    if backend == "postgresql" and driver == "psycopg" and bulk.copy_postgresql(conn, table, frame):
        return len(frame)
    if backend in ("sqlite", "mysql", "mariadb"):
        bulk.executemany_rows(conn, table, frame)
    else:
        bulk.execute_records(conn, table, frame)
    return len(frame)


def delete_window_range(
    conn: sa.Connection, tables: Tables, compressor_id: str, model_version: str, start: datetime, end: datetime
) -> None:
    """Remove one compressor's results of one model version in [start, end] (delete-then-insert of every batch)."""
    for table, column in ((tables.detailed, "window_end"), (tables.results, "timestamp")):
        conn.execute(
            sa.delete(table).where(
                table.c.compressor_id == compressor_id,
                table.c.model_version == model_version,
                table.c[column] >= start,
                table.c[column] <= end,
            )
        )


def stored_windows(conn: sa.Connection, tables: Tables, compressor_id: str, after: datetime, until: datetime) -> pd.DataFrame:
    """window_end and model_version of one compressor's stored windows with after < window_end <= until.

    The stored side of the lateness anti-join (an indexed range query on compressor_id, window_end).
    """
    table = tables.detailed
    result = conn.execute(
        sa.select(table.c.window_end, table.c.model_version).where(
            table.c.compressor_id == compressor_id, table.c.window_end > after, table.c.window_end <= until
        )
    )
    return pd.DataFrame(result.fetchall(), columns=["window_end", "model_version"])


def recent_flagged(conn: sa.Connection, tables: Tables, compressor_id: str, model_version: str, hours: float, mode: str) -> tuple[int, int]:
    """(windows, windows above the threshold) of one compressor and model version among those ending in the
    `hours` before its latest stored window, in operating mode `mode` and outside maintenance (rows of
    releases before those columns count). Both are indexed range queries on compressor_id, window_end."""
    table = tables.detailed
    mine = (table.c.compressor_id == compressor_id, table.c.model_version == model_version)
    latest = conn.execute(sa.select(sa.func.max(table.c.window_end)).where(*mine)).scalar_one()
    if latest is None:
        return 0, 0
    windows, flagged = conn.execute(
        sa.select(sa.func.count(), sa.func.sum(sa.case((table.c.is_anomaly, 1), else_=0))).where(
            *mine,
            table.c.window_end > latest - timedelta(hours=hours),
            sa.or_(table.c.operating_mode.is_(None), table.c.operating_mode == mode),
            sa.or_(table.c.maintenance.is_(None), table.c.maintenance == sa.false()),
        )
    ).one()
    return int(windows or 0), int(flagged or 0)


def stored_alarm_state(
    conn: sa.Connection, tables: Tables, compressor_id: str, model_version: str, window_end: datetime
) -> tuple[int, str | None]:
    """(consecutive count, alarm state) stored for one window, of this model version if it has one,
    else of the latest version stored there; (0, None) when none is stored."""
    table = tables.detailed
    rows = conn.execute(
        sa.select(table.c.model_version, table.c.consecutive_count, table.c.alarm_state)
        .where(table.c.compressor_id == compressor_id, table.c.window_end == window_end)
    ).all()
    states = {version: (int(count), state) for version, count, state in rows}
    if model_version in states:
        return states[model_version]
    return states[max(states)] if states else (0, None)
