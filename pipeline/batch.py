"""One compressor, one batch: read -> validate -> window -> infer -> score -> write, in one transaction.

The caller opens the transaction; everything here reads and writes through that connection, so
the result rows, the batch summary and the checkpoint commit together or not at all.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.errors import DataValidationError
from core.settings import Settings
from db.results import (
    Checkpoint,
    consecutive_count_before,
    delete_window_range,
    insert_frame,
    read_checkpoint,
    save_checkpoint,
    utcnow,
)
from db.schema import Tables
from db.source import read_context, read_rows
from models.artifacts import ModelBundle
from pipeline.scoring import score_windows
from pipeline.validate import validate_rows
from pipeline.windows import build_windows, count_gaps

log = logging.getLogger(__name__)
_EPSILON = timedelta(microseconds=1)


@dataclass
class BatchOutcome:
    """What one batch did, for the summary table, the logs and the metrics."""

    compressor_id: str
    mode: str
    status: str = "ok"
    rows_read: int = 0
    windows_scored: int = 0
    anomaly_points: int = 0
    triggered_events: int = 0
    rows_rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    gaps: int = 0
    range_start: datetime | None = None
    range_end: datetime | None = None
    model_version: str | None = None
    message: str = ""
    alerts: list[tuple[datetime, str]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    started_at: datetime = field(default_factory=utcnow)

    @property
    def duration_s(self) -> float:
        return time.perf_counter() - self.started

    def log_line(self) -> str:
        text = (
            f"compressor {self.compressor_id} [{self.mode}] {self.status}: rows={self.rows_read} "
            f"windows={self.windows_scored} anomalies={self.anomaly_points} alerts={self.triggered_events} "
            f"rejected={self.rows_rejected} gaps={self.gaps} ({self.duration_s:.2f} s)"
        )
        return text + (f" - {self.message}" if self.message else "")

    def summary_row(self, batch_id: str) -> dict:
        return {
            "batch_id": batch_id,
            "compressor_id": self.compressor_id,
            "mode": self.mode,
            "range_start": self.range_start,
            "range_end": self.range_end,
            "rows_read": self.rows_read,
            "windows_scored": self.windows_scored,
            "anomaly_points": self.anomaly_points,
            "triggered_events": self.triggered_events,
            "rows_rejected": self.rows_rejected,
            "rejection_reasons": json.dumps(dict(sorted(self.reasons.items()))) if self.reasons else None,
            "gaps": self.gaps,
            "model_version": self.model_version,
            "duration_s": round(self.duration_s, 4),
            "status": self.status,
            "message": self.message[:1000] or None,
            "started_at": self.started_at,
            "finished_at": utcnow(),
        }


def write_summary(conn: sa.Connection, tables: Tables, outcome: BatchOutcome, batch_id: str) -> None:
    conn.execute(sa.insert(tables.summary).values(**outcome.summary_row(batch_id)))


def _to_datetime(value: np.datetime64) -> datetime:
    return pd.Timestamp(value).to_pydatetime()


def _score_and_write(
    conn: sa.Connection,
    tables: Tables,
    settings: Settings,
    bundle: ModelBundle,
    outcome: BatchOutcome,
    frame: pd.DataFrame,
    after: datetime | None,
    initial_count: int,
    batch_id: str,
) -> pd.DataFrame:
    """Validate, window, score and insert the windows ending after `after`; fill the outcome."""
    clean = validate_rows(frame, settings.source.timestamp_column, bundle.features, settings.data.missing_value_rule, bundle.window)
    outcome.reasons.update(clean.rejected)
    outcome.rows_rejected = clean.rows_rejected
    windows = build_windows(clean.values, clean.times, bundle.window, settings.max_gap_s)
    new_windows = windows.after(np.datetime64(after) if after else None)
    fresh_times = clean.times[clean.times > np.datetime64(after)] if after else clean.times
    outcome.gaps = count_gaps(fresh_times, settings.max_gap_s)
    scored = score_windows(bundle, outcome.compressor_id, new_windows, tables.error_columns, initial_count)
    outcome.windows_scored = len(scored)
    outcome.anomaly_points = int(scored["is_anomaly"].sum())
    outcome.triggered_events = int(scored["triggered"].sum())
    alerts = scored.loc[scored["triggered"], ["window_end", "top_features"]]
    outcome.alerts = [(_to_datetime(t), f) for t, f in alerts.itertuples(index=False)]
    now = utcnow()
    detailed = scored.assign(batch_id=batch_id, compressor_id=outcome.compressor_id, model_version=bundle.version, created_at=now)
    insert_frame(conn, tables.detailed, detailed)
    simple = scored[["window_end", "score", "is_anomaly"]].rename(columns={"window_end": "timestamp"})
    insert_frame(conn, tables.results, simple.assign(compressor_id=outcome.compressor_id, model_version=bundle.version))
    for when, signals in outcome.alerts:
        log.warning("ALERT compressor %s at %s: top signals %s", outcome.compressor_id, when, signals)
    return scored


def _context(conn, tables, settings, cid, at_or_before: datetime | None, window: int) -> pd.DataFrame | None:
    if at_or_before is None:
        return None
    return read_context(conn, tables, settings, cid, at_or_before, window)


def live_batch(
    conn: sa.Connection,
    tables: Tables,
    settings: Settings,
    bundle: ModelBundle,
    cid: str,
    batch_id: str,
    min_records: int = 1,
) -> BatchOutcome:
    """Score the rows after the compressor's checkpoint and advance it, in the caller's transaction."""
    outcome = BatchOutcome(cid, "live", model_version=bundle.version)
    checkpoint = read_checkpoint(conn, tables, cid)
    after = checkpoint.last_timestamp or _initial_checkpoint(bundle)
    new = read_rows(conn, tables, settings, cid, after=after)
    outcome.rows_read = len(new)
    if outcome.rows_read == 0:
        outcome.status = "no_new_data"
        return outcome
    if outcome.rows_read < min_records:
        outcome.status, outcome.message = "waiting", f"{outcome.rows_read} new rows < min_records {min_records}"
        return outcome
    times = pd.to_datetime(new[settings.source.timestamp_column], errors="coerce")
    outcome.range_start, outcome.range_end = times.min().to_pydatetime(), times.max().to_pydatetime()
    if cid not in bundle.thresholds:
        outcome.status = "skipped"
        outcome.reasons["unknown_compressor"] = outcome.rows_read
        outcome.message = f"compressor {cid!r} is not in model {bundle.version}; rows kept for when it is added"
        write_summary(conn, tables, outcome, batch_id)
        return outcome
    context = _context(conn, tables, settings, cid, after, bundle.window)
    frame = pd.concat([context, new], ignore_index=True) if context is not None and len(context) else new
    scored = _score_and_write(conn, tables, settings, bundle, outcome, frame, after, checkpoint.consecutive_count, batch_id)
    last_count = int(scored["consecutive_count"].iloc[-1]) if len(scored) else 0
    save_checkpoint(conn, tables, Checkpoint(cid, outcome.range_end, last_count, bundle.version))
    write_summary(conn, tables, outcome, batch_id)
    return outcome


def backfill_batch(
    conn: sa.Connection,
    tables: Tables,
    settings: Settings,
    bundle: ModelBundle,
    cid: str,
    start: datetime,
    end: datetime,
    batch_id: str,
    advance_checkpoint: bool = False,
) -> BatchOutcome:
    """(Re)score windows ending in [start, end]; replaces earlier results of the same model version."""
    outcome = BatchOutcome(cid, "backfill", model_version=bundle.version, range_start=start, range_end=end)
    bundle.threshold_for(cid)
    before = start - _EPSILON
    rows = read_rows(conn, tables, settings, cid, after=before, until=end)
    outcome.rows_read = len(rows)
    if outcome.rows_read == 0:
        outcome.status = "no_new_data"
        return outcome
    context = _context(conn, tables, settings, cid, before, bundle.window)
    frame = pd.concat([context, rows], ignore_index=True) if context is not None and len(context) else rows
    last_end, count = consecutive_count_before(conn, tables, cid, bundle.version, start)
    has_context = context is not None and len(context) > 0
    context_end = pd.Timestamp(context[settings.source.timestamp_column].iloc[-1]) if has_context else None
    initial = count if last_end is not None and context_end is not None and pd.Timestamp(last_end) == context_end else 0
    delete_window_range(conn, tables, cid, bundle.version, start, end)
    scored = _score_and_write(conn, tables, settings, bundle, outcome, frame, before, initial, batch_id)
    if advance_checkpoint:
        data_end = pd.to_datetime(rows[settings.source.timestamp_column], errors="coerce").max().to_pydatetime()
        current = read_checkpoint(conn, tables, cid)
        if current.last_timestamp is None or data_end > current.last_timestamp:
            last_count = int(scored["consecutive_count"].iloc[-1]) if len(scored) else 0
            save_checkpoint(conn, tables, Checkpoint(cid, data_end, last_count, bundle.version))
    write_summary(conn, tables, outcome, batch_id)
    return outcome


def _initial_checkpoint(bundle: ModelBundle) -> datetime | None:
    """Without a checkpoint, live scoring starts after the model's training range (older rows: backfill)."""
    end = bundle.training_range[1] if bundle.training_range else None
    if not end:
        return None
    try:
        return datetime.fromisoformat(end)
    except ValueError as exc:
        raise DataValidationError(f"model {bundle.version} has an unreadable training end {end!r}") from exc
