"""A bounded on-disk queue of sampled rows (an SQLite file of JSON rows, never pickles).

Every sampled row is appended here first and leaves only after the database has committed it,
so rows survive a database outage and a restart of the collector. Rows leave in the order they
arrived. When the spool holds `max_rows`, the oldest rows are dropped (counted and logged):
the newest telemetry is the most useful once the database is back.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

Row = tuple[str, datetime, dict[str, float | None]]


class Spool:
    """Rows of (compressor, naive UTC timestamp, signal values); one writer and one reader may share it."""

    def __init__(self, path: str | Path, max_rows: int) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.dropped = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " compressor TEXT NOT NULL, ts TEXT NOT NULL, row_values TEXT NOT NULL)"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One transaction on a connection of its own (the writer and the reader run in different threads)."""
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:
                yield conn
        finally:
            conn.close()

    def append(self, rows: list[Row]) -> None:
        """Add rows at the end (one transaction); drop the oldest beyond max_rows."""
        if not rows:
            return
        records = [(cid, ts.isoformat(), json.dumps({k: _json_value(v) for k, v in values.items()})) for cid, ts, values in rows]
        with self._connect() as conn:
            conn.executemany("INSERT INTO spool (compressor, ts, row_values) VALUES (?, ?, ?)", records)
            excess = conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0] - self.max_rows
            if excess > 0:
                conn.execute("DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?)", (excess,))
                self.dropped += excess
                log.error("spool %s is full (%d rows): dropped the %d oldest row(s), %d so far", self.path, self.max_rows, excess, self.dropped)

    def head(self, limit: int) -> tuple[int, list[Row]]:
        """The oldest `limit` rows and the sequence number of the last one (0 when empty)."""
        with self._connect() as conn:
            records = conn.execute("SELECT seq, compressor, ts, row_values FROM spool ORDER BY seq LIMIT ?", (limit,)).fetchall()
        rows = [(cid, datetime.fromisoformat(ts), json.loads(values)) for _, cid, ts, values in records]
        return (records[-1][0] if records else 0), rows

    def remove_through(self, seq: int) -> None:
        """Forget every row up to and including sequence number `seq` (after the database committed them)."""
        with self._connect() as conn:
            conn.execute("DELETE FROM spool WHERE seq <= ?", (seq,))

    def __len__(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0])


def _json_value(value: float | None) -> float | None:
    """JSON has no NaN: a missing value is null."""
    return None if value is None or not math.isfinite(value) else float(value)
