"""The source rows each live batch has accounted for, per compressor and UTC day (lstm_source_day_counts).

Written only inside the caller's transaction (the one that advances the checkpoint).
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from db.schema import Tables


def counted(conn: sa.Connection, tables: Tables, compressor_id: str) -> tuple[int, datetime | None]:
    """(rows counted, the time they were counted through) of one compressor; (0, None) before its first count."""
    table = tables.day_counts
    total, through = conn.execute(
        sa.select(sa.func.sum(table.c.row_count), sa.func.max(table.c.counted_through)).where(table.c.compressor_id == compressor_id)
    ).one()
    return int(total or 0), through


def read_day_counts(conn: sa.Connection, tables: Tables, compressor_id: str) -> dict[datetime, int]:
    """Stored row count per day (keyed by its midnight) of one compressor."""
    table = tables.day_counts
    rows = conn.execute(sa.select(table.c.day_start, table.c.row_count).where(table.c.compressor_id == compressor_id))
    return {day: int(count) for day, count in rows}


def replace_day_counts(
    conn: sa.Connection, tables: Tables, compressor_id: str, counts: dict[datetime, int], through: datetime, since: datetime | None
) -> None:
    """Store `counts` (counted through `through`) in place of the compressor's days from `since` on (every day when None)."""
    table = tables.day_counts
    delete = sa.delete(table).where(table.c.compressor_id == compressor_id)
    conn.execute(delete if since is None else delete.where(table.c.day_start >= since))
    rows = [
        {"compressor_id": compressor_id, "day_start": day, "row_count": count, "counted_through": through}
        for day, count in sorted(counts.items())
    ]
    if rows:
        conn.execute(sa.insert(table), rows)
