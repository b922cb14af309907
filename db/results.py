"""Writing results and moving checkpoints, always inside the caller's transaction."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa

from db.schema import Tables


def utcnow() -> datetime:
    """Naive UTC now (all timestamps in the database are naive UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Checkpoint:
    """Where a compressor's live scoring stands."""

    compressor_id: str
    last_timestamp: datetime | None
    consecutive_count: int = 0
    model_version: str | None = None


def read_checkpoint(conn: sa.Connection, tables: Tables, compressor_id: str) -> Checkpoint:
    row = conn.execute(sa.select(tables.checkpoint).where(tables.checkpoint.c.compressor_id == compressor_id)).mappings().first()
    if row is None:
        return Checkpoint(compressor_id, None)
    return Checkpoint(compressor_id, row["last_timestamp"], int(row["consecutive_count"] or 0), row["model_version"])


def read_checkpoints(conn: sa.Connection, tables: Tables) -> dict[str, Checkpoint]:
    rows = conn.execute(sa.select(tables.checkpoint)).mappings()
    return {r["compressor_id"]: Checkpoint(r["compressor_id"], r["last_timestamp"], int(r["consecutive_count"] or 0), r["model_version"]) for r in rows}


def save_checkpoint(conn: sa.Connection, tables: Tables, checkpoint: Checkpoint) -> None:
    """Insert or update one compressor's checkpoint (portable: update, then insert if absent)."""
    values = {
        "last_timestamp": checkpoint.last_timestamp,
        "consecutive_count": checkpoint.consecutive_count,
        "model_version": checkpoint.model_version,
        "updated_at": utcnow(),
    }
    table = tables.checkpoint
    updated = conn.execute(sa.update(table).where(table.c.compressor_id == checkpoint.compressor_id).values(**values))
    if updated.rowcount == 0:
        conn.execute(sa.insert(table).values(compressor_id=checkpoint.compressor_id, **values))


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain Python values (datetimes, floats, bools) that every driver accepts."""
    out = frame.astype(object).where(frame.notna(), None)
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            out[column] = [t.to_pydatetime() if t is not None else None for t in out[column]]
    return out.to_dict("records")


def insert_frame(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Bulk insert a frame whose columns are a subset of the table's (one executemany)."""
    if frame.empty:
        return 0
    conn.execute(sa.insert(table), _records(frame))
    return len(frame)


def delete_window_range(
    conn: sa.Connection, tables: Tables, compressor_id: str, model_version: str, start: datetime, end: datetime
) -> None:
    """Remove one compressor's results of one model version in [start, end] (used before a backfill)."""
    for table, column in ((tables.detailed, "window_end"), (tables.results, "timestamp")):
        conn.execute(
            sa.delete(table).where(
                table.c.compressor_id == compressor_id,
                table.c.model_version == model_version,
                table.c[column] >= start,
                table.c[column] <= end,
            )
        )


def consecutive_count_before(conn: sa.Connection, tables: Tables, compressor_id: str, model_version: str, before: datetime) -> tuple[datetime | None, int]:
    """End time and consecutive count of the last stored window before a time (for backfills)."""
    table = tables.detailed
    row = conn.execute(
        sa.select(table.c.window_end, table.c.consecutive_count)
        .where(table.c.compressor_id == compressor_id, table.c.model_version == model_version, table.c.window_end < before)
        .order_by(table.c.window_end.desc())
        .limit(1)
    ).first()
    return (row[0], int(row[1])) if row else (None, 0)
