"""One compressor, one batch: read -> validate -> window -> infer -> score -> write, in one transaction.

The caller opens the transaction; everything here reads and writes through that connection, so
the result rows, the batch summary and the checkpoint commit together or not at all.

How a batch stays exactly-once:
- windows are built over the rows after a lower bound plus enough earlier rows (distinct timestamps,
  more under the impute rule) that every window, and whether it directly follows the one before,
  comes out as it would over the full history;
- the alarm state (models/alarms.py: run length, recent flags, CUSUM, open episode) carries over
  from the checkpoint (or from the stored window just before the first one scored), so an anomaly
  run split over two batches alarms as in one;
- a batch deletes this model version's results in the range it writes, then inserts them
  (delete-then-insert): a replay or an overlapping backfill never leaves a second copy;
- late rows within the allowance: a live batch also looks at the lateness allowance A before its
  checkpoint C. Windows ending in (C - A, C] that the rows now support but that have no stored result
  (an anti-join of the windows against the detailed table) are scored, with every later window, from
  the earliest one on. A late row there that merely changes an already scored window (a duplicate
  timestamp, or one between two existing rows) is picked up by a backfill only;
- late rows beyond the allowance (at or before C - A) are found by counting (pipeline/lateness.py),
  reported with the backfill that scores them, and never scored by a live batch;
- rows stamped after the horizon (now + `data.future_tolerance_s`) are neither read nor scored and
  never move the checkpoint: they are counted (`future_timestamp`) and scored once their time comes.
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

from core import faults
from core.clock import utcnow
from core.errors import DataValidationError
from core.timerange import SUPPORTED_END
from core.settings import Settings
from db.results import (
    Checkpoint,
    delete_window_range,
    insert_frame,
    read_checkpoint,
    save_checkpoint,
    stored_alarm_state,
    stored_windows,
)
from db.schema import Tables
from db.source import bad_timestamps, count_rows_after, span
from models.alarms import AlarmState
from models.artifacts import ModelBundle
from pipeline import lateness
from pipeline.episodes import rewrite_episodes
from pipeline.suppression import RUNNING, for_compressor
from pipeline.scoring import score_windows
from pipeline.prepare import PreparedRows, as_datetime64, read_windows, validated
from pipeline.timing import StageTimer
from pipeline.windows import segment_starts

log = logging.getLogger(__name__)
_EPSILON = timedelta(microseconds=1)


class ModelNeeded(Exception):
    """A live batch has windows to score but its bundle was loaded without the detector (load_metadata_bundle).

    Raised before the batch writes anything, so its transaction rolls back; the runner loads the
    model and runs the batch again.
    """


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
    maintenance_windows: int = 0
    stopped_windows: int = 0
    episodes_opened: int = 0
    notifications_queued: int = 0
    range_start: datetime | None = None
    range_end: datetime | None = None
    model_version: str | None = None
    message: str = ""
    alerts: list[tuple[datetime, str]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    started_at: datetime = field(default_factory=utcnow)
    timer: StageTimer = field(default_factory=StageTimer)

    @property
    def duration_s(self) -> float:
        return time.perf_counter() - self.started

    def log_line(self) -> str:
        text = (
            f"compressor {self.compressor_id} [{self.mode}] {self.status}: rows={self.rows_read} "
            f"windows={self.windows_scored} anomalies={self.anomaly_points} alerts={self.triggered_events} "
            f"rejected={self.rows_rejected} gaps={self.gaps}"
        )
        if self.maintenance_windows or self.stopped_windows or self.notifications_queued:
            text += f" maintenance={self.maintenance_windows} stopped={self.stopped_windows} notifications={self.notifications_queued}"
        text += f" ({self.duration_s:.2f} s)"
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
            "maintenance_windows": self.maintenance_windows,
            "stopped_windows": self.stopped_windows,
            "model_version": self.model_version,
            "duration_s": round(self.duration_s, 4),
            "status": self.status,
            "message": self.message[:1000] or None,
            "started_at": self.started_at,
            "finished_at": utcnow(),
        }


@dataclass(frozen=True)
class BatchContext:
    """What every step of one compressor batch works with; `conn` holds the batch's open transaction."""

    conn: sa.Connection
    tables: Tables
    settings: Settings
    bundle: ModelBundle
    batch_id: str


@dataclass(frozen=True)
class BatchPlan:
    """What a batch scores and writes, decided after reading and before any scoring or writing.

    rows:    the rows read (context included), validated and windowed
    after:   rejections and gaps are counted among the rows after it (None: all rows)
    first:   index of the first window to score; earlier windows are context
    initial: the alarm state carried into windows[first]
    replace: the window-end range whose results of this model version are replaced (None: none)
    """

    rows: PreparedRows
    after: datetime | None
    first: int
    initial: AlarmState
    replace: tuple[datetime, datetime] | None

    @property
    def ends(self) -> np.ndarray:
        return self.rows.windows.end_times


def write_summary(conn: sa.Connection, tables: Tables, outcome: BatchOutcome, batch_id: str) -> None:
    conn.execute(sa.insert(tables.summary).values(**outcome.summary_row(batch_id)))


def horizon(settings: Settings) -> datetime:
    """now + the future tolerance: rows stamped later are held back."""
    return min(utcnow() + timedelta(seconds=settings.data.future_tolerance_s), SUPPORTED_END)


def _hold_back_future(ctx: BatchContext, outcome: BatchOutcome, edge: datetime, until: datetime | None) -> None:
    """Count the rows stamped after `edge` (up to `until`): not scored now, reported with a warning."""
    settings = ctx.settings
    with outcome.timer.stage("reading"):
        future = count_rows_after(ctx.conn, ctx.tables, settings, outcome.compressor_id, edge, until)
    if future:
        outcome.reasons["future_timestamp"] = future
        note = (
            f"compressor {outcome.compressor_id}: {future} rows stamped after {edge:%Y-%m-%dT%H:%M:%S} "
            f"(now + {settings.data.future_tolerance_s:g} s) held back, scored once their time comes"
        )
        outcome.message = f"{outcome.message}; {note}" if outcome.message else note
        log.warning(note)


def _to_datetime(value: np.datetime64) -> datetime:
    return pd.Timestamp(value).to_pydatetime()


def _read(ctx: BatchContext, outcome: BatchOutcome, lower: datetime | None, until: datetime | None) -> PreparedRows:
    rows = read_windows(ctx.conn, ctx.tables, ctx.settings, ctx.bundle.features, ctx.bundle.window, outcome.compressor_id, lower, until, timer=outcome.timer)
    faults.hit("read", ctx.conn)
    return rows


def _count_fresh(ctx: BatchContext, outcome: BatchOutcome, plan: BatchPlan) -> None:
    """Rejections and gaps among the rows after `plan.after` only (context rows were counted by their own batch).

    When every row read is fresh (a backfill from the first row), the validation done while
    reading already counted them and is not repeated."""
    settings, rows, after = ctx.settings, plan.rows, plan.after
    fresh = rows.frame
    if after is not None:
        fresh = fresh.loc[as_datetime64(fresh[settings.source.timestamp_column]) > np.datetime64(after, "ns")]
    checked = rows.clean if len(fresh) == len(rows.frame) else validated(fresh, settings, ctx.bundle.features, ctx.bundle.window)
    outcome.reasons.update(checked.rejected)
    outcome.rows_rejected = checked.rows_rejected
    starts = segment_starts(rows.clean.times, settings.max_gap_s)
    if len(starts):
        starts[0] = False
    if after is not None:
        starts &= rows.clean.times > np.datetime64(after, "ns")
    outcome.gaps = int(starts.sum())


def _count_bad_timestamps(ctx: BatchContext, outcome: BatchOutcome) -> None:
    """Rows with a NULL or unreadable timestamp (never read): rejected, reported by every batch that scores while they remain."""
    with outcome.timer.stage("reading"):
        bad = bad_timestamps(ctx.conn, ctx.tables, ctx.settings, outcome.compressor_id)
    if bad:
        outcome.reasons["bad_timestamp"] += bad
        outcome.rows_rejected += bad
        log.warning("compressor %s: %d rows with a missing or unreadable timestamp are not scored; fix or delete them", outcome.compressor_id, bad)


def _execute(ctx: BatchContext, outcome: BatchOutcome, plan: BatchPlan) -> pd.DataFrame:
    """Count the fresh rows, score windows[first:], then replace this model version's results (and
    alert episodes) in `plan.replace` by them."""
    _count_fresh(ctx, outcome, plan)
    _count_bad_timestamps(ctx, outcome)
    conn, tables, settings, bundle = ctx.conn, ctx.tables, ctx.settings, ctx.bundle
    cid = outcome.compressor_id
    windows = plan.rows.windows
    todo = windows.take(slice(plan.first, None))
    span_ends = (_to_datetime(todo.end_times[0]), _to_datetime(todo.end_times[-1])) if len(todo) else None
    suppression = for_compressor(conn, tables, settings, bundle.features, cid, *span_ends) if span_ends else None
    with outcome.timer.stage("scoring"):
        scored = score_windows(bundle, cid, todo, tables.error_columns, plan.initial, outcome.timer, suppression)
    faults.hit("infer", conn)
    unscorable = len(todo) - len(scored)
    if unscorable:
        outcome.reasons["non_finite_score"] = unscorable
        log.warning("compressor %s: %d windows gave a non-finite score (overflow) and were not stored", cid, unscorable)
    outcome.windows_scored = len(scored)
    outcome.anomaly_points = int(scored["is_anomaly"].sum())
    outcome.triggered_events = int(scored["triggered"].sum())
    if suppression is not None:
        outcome.maintenance_windows = int(scored["maintenance"].sum())
        outcome.stopped_windows = int((scored["operating_mode"] != RUNNING).sum())
    alerts = scored.loc[scored["triggered"], ["window_end", "top_features"]]
    outcome.alerts = [(_to_datetime(t), f) for t, f in alerts.itertuples(index=False)]
    now = utcnow()
    detailed = scored.assign(batch_id=ctx.batch_id, compressor_id=cid, model_version=bundle.version, created_at=now)
    simple = scored[["window_end", "score", "is_anomaly"]].rename(columns={"window_end": "timestamp"})
    with outcome.timer.stage("writing"):
        if plan.replace is not None:
            delete_window_range(conn, tables, cid, bundle.version, *plan.replace)
        insert_frame(conn, tables.detailed, detailed)
        faults.hit("write", conn)
        insert_frame(conn, tables.results, simple.assign(compressor_id=cid, model_version=bundle.version))
        lo, hi = plan.replace or span_ends or (None, None)
        if lo is not None:
            notify = outcome.mode == "live" or settings.notify.backfill
            episodes = rewrite_episodes(conn, tables, settings, cid, bundle.version, scored, lo, hi, notify, now)
            outcome.episodes_opened, outcome.notifications_queued = episodes.opened, episodes.notifications
    for when, signals in outcome.alerts:
        log.warning("ALERT compressor %s at %s: top signals %s", cid, when, signals)
    return scored


def _skip_unknown(ctx: BatchContext, outcome: BatchOutcome) -> BatchOutcome:
    outcome.status = "skipped"
    outcome.reasons["unknown_compressor"] = outcome.rows_read
    outcome.message = f"compressor {outcome.compressor_id!r} is not in model {ctx.bundle.version}; rows kept for when it is added"
    write_summary(ctx.conn, ctx.tables, outcome, ctx.batch_id)
    return outcome


def _band_start(settings: Settings, checkpoint: Checkpoint, live_start: datetime | None) -> datetime | None:
    """C - A, where the allowance band (C - A, C] starts; None when the band is empty."""
    edge = lateness.allowance_edge(settings, checkpoint.last_timestamp, live_start)
    return edge if edge is not None and edge < checkpoint.last_timestamp else None


def _late_windows(ctx: BatchContext, outcome: BatchOutcome, ends: np.ndarray, band: datetime, ckpt: datetime) -> int | None:
    """Index of the earliest window in (C - A, C] without a stored result (None when there is none)."""
    stored = stored_windows(ctx.conn, ctx.tables, outcome.compressor_id, band, ckpt)
    missing = ~np.isin(ends, as_datetime64(stored["window_end"]))
    within = np.flatnonzero(missing & (ends > np.datetime64(band, "ns")) & (ends <= np.datetime64(ckpt, "ns")))
    if not len(within):
        return None
    outcome.reasons["late_within_allowance"] = len(within)
    return int(within[0])


def _count_rows(ctx: BatchContext, outcome: BatchOutcome, end: datetime, live_start: datetime | None) -> lateness.RowCounts:
    """Count the rows up to the new allowance edge; report the rows that arrived late beyond the allowance."""
    settings = ctx.settings
    with outcome.timer.stage("reading"):
        counts = lateness.count_rows(ctx.conn, ctx.tables, settings, outcome.compressor_id, lateness.allowance_edge(settings, end, live_start))
    if counts.late:
        outcome.reasons["late_beyond_allowance"] = counts.late_rows
        outcome.message = counts.report(outcome.compressor_id, settings, ctx.bundle.window)
        log.warning(outcome.message)
    return counts


def _finish_unscored(ctx: BatchContext, outcome: BatchOutcome, counts: lateness.RowCounts) -> BatchOutcome:
    """A live batch without windows to score: store the counts; a summary only when late rows were reported."""
    lateness.store_counts(ctx.conn, ctx.tables, outcome.compressor_id, counts)
    if not outcome.reasons:
        outcome.status = "no_new_data"
        return outcome
    write_summary(ctx.conn, ctx.tables, outcome, ctx.batch_id)
    faults.hit("commit", ctx.conn)
    return outcome


def _plan_live(ctx: BatchContext, outcome: BatchOutcome, checkpoint: Checkpoint, after: datetime | None, band: datetime | None, edge: datetime) -> BatchPlan | None:
    """The windows after the checkpoint, from the earliest late one within the allowance on; None when there are none."""
    rows = _read(ctx, outcome, band or after, edge)
    ends = rows.windows.end_times
    first = int(np.searchsorted(ends, np.datetime64(after, "ns"), side="right")) if after else 0
    initial = AlarmState.decode(checkpoint.alarm_state, checkpoint.consecutive_count)
    late = _late_windows(ctx, outcome, ends, band, after) if band else None
    if late is not None:
        first = late
        initial = _stored_state(ctx, outcome.compressor_id, ends, late)
        outcome.range_start = _to_datetime(ends[late])
    if outcome.rows_read == 0 and first == len(ends):
        return None
    replace = (_to_datetime(ends[first]), _to_datetime(ends[-1])) if first < len(ends) else None
    return BatchPlan(rows, after, first, initial, replace)


def live_batch(
    conn: sa.Connection,
    tables: Tables,
    settings: Settings,
    bundle: ModelBundle,
    cid: str,
    batch_id: str,
    min_records: int = 1,
) -> BatchOutcome:
    """Score the windows after the compressor's checkpoint (and late ones before it) and advance it."""
    ctx = BatchContext(conn, tables, settings, bundle, batch_id)
    outcome = BatchOutcome(cid, "live", model_version=bundle.version)
    checkpoint = read_checkpoint(conn, tables, cid)
    live_start = _initial_checkpoint(bundle)
    after = checkpoint.last_timestamp or live_start
    edge = horizon(settings)
    with outcome.timer.stage("reading"):
        outcome.rows_read, first_new, last_new = span(conn, tables, settings, cid, after, edge)
    if 0 < outcome.rows_read < min_records:
        outcome.status, outcome.message = "waiting", f"{outcome.rows_read} new rows < min_records {min_records}"
        return outcome
    end = last_new or after
    if end is None or (outcome.rows_read == 0 and cid not in bundle.thresholds):
        outcome.status = "no_new_data"
        return outcome
    outcome.range_start, outcome.range_end = first_new, end
    if cid not in bundle.thresholds:
        return _skip_unknown(ctx, outcome)
    if outcome.rows_read and not bundle.loaded:
        raise ModelNeeded(cid)
    counts = _count_rows(ctx, outcome, end, live_start)
    _hold_back_future(ctx, outcome, max(edge, after) if after else edge, None)
    band = _band_start(settings, checkpoint, live_start)
    plan = None if outcome.rows_read == 0 and band is None else _plan_live(ctx, outcome, checkpoint, after, band, edge)
    if plan is None:
        return _finish_unscored(ctx, outcome, counts)
    if not bundle.loaded:
        raise ModelNeeded(cid)  # late windows within the allowance to score
    scored = _execute(ctx, outcome, plan)
    save_checkpoint(conn, tables, _advanced(checkpoint, scored, cid, end, bundle))
    lateness.store_counts(conn, tables, cid, counts)
    write_summary(conn, tables, outcome, batch_id)
    faults.hit("commit", conn)
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
    """(Re)score windows ending in [start, end]; replaces earlier results of the same model version.

    The live checkpoint moves only with `advance_checkpoint`, and only forward.
    """
    ctx = BatchContext(conn, tables, settings, bundle, batch_id)
    outcome = BatchOutcome(cid, "backfill", model_version=bundle.version, range_start=start, range_end=end)
    before = start - _EPSILON
    edge = horizon(settings)
    if end > edge:
        _hold_back_future(ctx, outcome, max(edge, before), end)
        end = max(edge, before)
    with outcome.timer.stage("reading"):
        outcome.rows_read, _, data_end = span(conn, tables, settings, cid, before, end)
    if outcome.rows_read == 0:
        outcome.status = "no_new_data"
        if outcome.reasons:
            write_summary(conn, tables, outcome, batch_id)
        return outcome
    if cid not in bundle.thresholds:
        return _skip_unknown(ctx, outcome)
    rows = _read(ctx, outcome, before, end)
    first = int(np.searchsorted(rows.windows.end_times, np.datetime64(before, "ns"), side="right"))
    plan = BatchPlan(rows, before, first, _stored_state(ctx, cid, rows.windows.end_times, first), (start, end))
    scored = _execute(ctx, outcome, plan)
    if advance_checkpoint:
        current = read_checkpoint(conn, tables, cid)
        if current.last_timestamp is None or data_end > current.last_timestamp:
            save_checkpoint(conn, tables, _advanced(current, scored, cid, data_end, bundle))
    write_summary(conn, tables, outcome, batch_id)
    faults.hit("commit", conn)
    return outcome


def _stored_state(ctx: BatchContext, cid: str, ends: np.ndarray, first: int) -> AlarmState:
    """The alarm state stored with the window just before windows[first] (a fresh one at the start)."""
    if not first:
        return AlarmState()
    count, state = stored_alarm_state(ctx.conn, ctx.tables, cid, ctx.bundle.version, _to_datetime(ends[first - 1]))
    return AlarmState.decode(state, count)


def _advanced(previous: Checkpoint, scored: pd.DataFrame, cid: str, end: datetime, bundle: ModelBundle) -> Checkpoint:
    """The checkpoint at `end`, carrying the alarm state after the last window scored (or the previous one)."""
    if not len(scored):
        return Checkpoint(cid, end, previous.consecutive_count, bundle.version, previous.alarm_state)
    last = scored.iloc[-1]
    return Checkpoint(cid, end, int(last["consecutive_count"]), bundle.version, last["alarm_state"])


def _initial_checkpoint(bundle: ModelBundle) -> datetime | None:
    """Without a checkpoint, live scoring starts after the model's training range (older rows: backfill)."""
    end = bundle.training_range[1] if bundle.training_range else None
    if not end:
        return None
    try:
        return datetime.fromisoformat(end)
    except ValueError as exc:
        raise DataValidationError(f"model {bundle.version} has an unreadable training end {end!r}") from exc
