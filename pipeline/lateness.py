"""Rows that arrive late, beyond the lateness allowance: found by counting, reported with the backfill that scores them.

Rows after the allowance edge E (the checkpoint C minus the allowance A, no earlier than where live
scoring started) belong to the allowance band, whose windows pipeline/batch.py scores when they lack
a result. Every row at or before E is counted per UTC day, and the counts are stored in
lstm_source_day_counts by the transaction that advances the checkpoint. The next live batch compares
one indexed COUNT of the rows at or before the stored edge with the stored total: equal, nothing
arrived late beyond the allowance and nothing more is read. Otherwise one count per day names the
days that gained rows; they are reported (`late_beyond_allowance`, a warning and the batch summary's
message, with the backfill command that scores them), not scored, and their counts stored, so each
late row is reported once. A day that lost as many rows as it gained shows no difference.

The counts to store are taken before the comparison, and both before the rows are read, so a row
written meanwhile can at worst be reported a second time by the next batch, never be missed.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

import sqlalchemy as sa

from core.settings import Settings
from db.day_counts import counted, read_day_counts, replace_day_counts
from db.schema import Tables
from db.source import rows_per_day, span

DAY = timedelta(days=1)


def allowance_edge(settings: Settings, checkpoint: datetime | None, live_start: datetime | None) -> datetime | None:
    """C - A, no earlier than live_start (nor later than C): rows after it and at or before C are within the allowance."""
    if checkpoint is None:
        return None
    edge = checkpoint - timedelta(seconds=max(settings.data.lateness_allowance_s, 0.0))
    return min(max(edge, live_start), checkpoint) if live_start is not None else edge


def _midnight(when: datetime) -> datetime:
    return datetime.combine(when.date(), time())


@dataclass(frozen=True)
class RowCounts:
    """What one live batch counted, and the late rows the count revealed."""

    counts: dict[datetime, int]  # rows per day (keyed by its midnight) to store, counted through `through`
    through: datetime
    since: datetime | None  # they replace the stored days from this one on (every day when None)
    changed: bool = True
    compared_through: datetime | None = None
    late: dict[datetime, int] = field(default_factory=dict)

    @property
    def late_rows(self) -> int:
        return sum(self.late.values())

    def report(self, compressor_id: str, settings: Settings, window: int) -> str:
        """One line: how many rows arrived late, when, and the backfill command that scores them."""
        first = min(self.late)
        last = min(max(self.late) + DAY, self.compared_through)
        # Every window a late row belongs to (and under the impute rule every row it fills) ends within this reach.
        reach = timedelta(seconds=2 * window * settings.max_gap_s)
        command = (
            f"python run_scheduler.py backfill --start {first.isoformat()} --end {(last + reach).isoformat()} "
            f"--compressor {shlex.quote(compressor_id)}"
        )
        return (
            f"compressor {compressor_id}: {self.late_rows} rows arrived late, beyond the lateness allowance "
            f"({settings.data.lateness_allowance_s:.0f} s), with timestamps between {first} and {last} "
            f"({len(self.late)} day(s)); not scored, rows kept; score them with: {command}"
        )


def count_rows(conn: sa.Connection, tables: Tables, settings: Settings, compressor_id: str, through: datetime) -> RowCounts:
    """Count the rows up to the new edge `through`; compare the rows up to the stored edge with their stored counts."""
    stored_total, stored_through = counted(conn, tables, compressor_id)
    if stored_through is None:  # the first count: a new compressor, or a database from before the counts
        return RowCounts(rows_per_day(conn, tables, settings, compressor_id, None, through), through, None)
    moved = through != stored_through
    # An edge moving forward recounts from its old day on; one moving back (a larger allowance), every day.
    since = _midnight(stored_through) if through > stored_through else None
    counts = rows_per_day(conn, tables, settings, compressor_id, since, through) if moved else {}
    if span(conn, tables, settings, compressor_id, None, stored_through)[0] == stored_total:
        return RowCounts(counts, through, since, changed=moved, compared_through=stored_through)
    now = rows_per_day(conn, tables, settings, compressor_id, None, stored_through)
    stored = read_day_counts(conn, tables, compressor_id)
    late = {day: n - stored.get(day, 0) for day, n in sorted(now.items()) if n > stored.get(day, 0)}
    if not moved:
        counts = now
    elif since is not None:
        counts = {**{day: n for day, n in now.items() if day < since}, **counts}
    return RowCounts(counts, through, None, compared_through=stored_through, late=late)


def store_counts(conn: sa.Connection, tables: Tables, compressor_id: str, counts: RowCounts) -> None:
    """Write what a batch counted (nothing when it changed nothing)."""
    if counts.changed:
        replace_day_counts(conn, tables, compressor_id, counts.counts, counts.through, counts.since)
