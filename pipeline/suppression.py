"""Which windows open no alert episode: maintenance windows and a stopped or starting compressor.

Both are facts about a window alone (its end time, its own rows), so a replay or a backfill of
the same rows under the same maintenance table and settings suppresses the same windows.

Operating mode, from `[alerts] stopped_when` ({signal: level}): a row is *stopped* when any listed
signal is below its level. A window is `stopped` when its last row is, `starting` when an earlier
row is (the start-up or the stop is still inside it), else `running`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import sqlalchemy as sa

from core.settings import Settings
from core.windows import WindowSet
from db.schema import Tables

RUNNING, STARTING, STOPPED = "running", "starting", "stopped"
_CHUNK = 65_536


@dataclass(frozen=True)
class Suppression:
    """The stopped rule as (feature index, level) pairs and one compressor's maintenance intervals."""

    levels: tuple[tuple[int, float], ...] = ()
    maintenance: tuple[tuple[datetime, datetime], ...] = ()

    def modes(self, ws: WindowSet) -> np.ndarray:
        """running / starting / stopped per window."""
        out = np.full(len(ws), RUNNING, dtype=object)
        if not self.levels:
            return out
        columns = [i for i, _ in self.levels]
        limits = np.asarray([level for _, level in self.levels], dtype=np.float32)
        for offset, windows in ws.chunks(_CHUNK):
            stopped_rows = (windows[:, :, columns] < limits).any(axis=2)  # (n, window)
            part = out[offset : offset + len(windows)]
            part[stopped_rows.any(axis=1)] = STARTING
            part[stopped_rows[:, -1]] = STOPPED
        return out

    def under_maintenance(self, ends: np.ndarray) -> np.ndarray:
        """True where a window ends inside a maintenance interval (both ends included)."""
        inside = np.zeros(len(ends), dtype=bool)
        for start, end in self.maintenance:
            inside |= (ends >= np.datetime64(start, "ns")) & (ends <= np.datetime64(end, "ns"))
        return inside


def for_compressor(conn: sa.Connection, tables: Tables, settings: Settings, features: tuple[str, ...], cid: str, first: datetime, last: datetime) -> Suppression:
    """The suppression of one compressor's windows ending in [first, last]: the stopped rule and the maintenance intervals overlapping it."""
    index = {f: i for i, f in enumerate(features)}
    levels = tuple((index[s], level) for s, level in settings.alerts.stopped_when if s in index)
    table = tables.alerts.maintenance
    rows = conn.execute(
        sa.select(table.c.starts_at, table.c.ends_at)
        .where(table.c.compressor_id == cid, table.c.starts_at <= last, table.c.ends_at >= first)
        .order_by(table.c.starts_at)
    ).all()
    return Suppression(levels, tuple((start, end) for start, end in rows))
