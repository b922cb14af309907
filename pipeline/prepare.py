"""Read -> validate -> window: the one path from source rows to the windows a detector scores.

Batches (live and backfill), `evaluate`, training and the tests all build their windows here, so a
window judged by `evaluate` or used in training is the window a backfill of the same range scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.settings import Settings
from db.schema import Tables
from db.source import nth_timestamp_before, read_rows
from pipeline.timing import StageTimer
from pipeline.validate import CleanRows, validate_rows, value_limits
from core.windows import WindowSet
from pipeline.windows import build_windows

_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True)
class PreparedRows:
    """Raw rows as read, the validated rows and their windows (gap-aware), all in time order."""

    frame: pd.DataFrame
    clean: CleanRows
    windows: WindowSet


def validated(frame: pd.DataFrame, settings: Settings, features: tuple[str, ...], window: int) -> CleanRows:
    """A raw frame (timestamp + feature columns) after the configured validation rules and value limits."""
    data = settings.data
    return validate_rows(frame, settings.source.timestamp_column, features, data.missing_value_rule, window, value_limits(data, features))


def window_rows(frame: pd.DataFrame, settings: Settings, features: tuple[str, ...], window: int) -> PreparedRows:
    """Validate a raw frame and window it."""
    clean = validated(frame, settings, features, window)
    return PreparedRows(frame, clean, build_windows(clean.values, clean.times, window, settings.max_gap_s))


def as_datetime64(values) -> np.ndarray:
    """Timestamps of any readable form as datetime64[ns] (unreadable ones: NaT); naive datetime64 values without a copy through objects."""
    if np.asarray(values).dtype.kind == "M":
        return np.asarray(values, dtype="datetime64[ns]")
    return pd.to_datetime(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype="datetime64[ns]")


def _enough_context(raw_times: np.ndarray, clean_times: np.ndarray, lower: datetime, window: int, impute: bool) -> bool:
    """True when the rows at or before `lower` give `window` validated rows that earlier rows cannot change.

    Under the impute rule a row is filled from at most `window` rows before it, so the first
    `window` distinct timestamps read only serve as the source of those fills.
    """
    exact = clean_times <= np.datetime64(lower, "ns")
    if impute:
        distinct = np.unique(raw_times[~np.isnat(raw_times)])
        if len(distinct) < window:
            return False
        exact &= clean_times > distinct[window - 1]
    return int(exact.sum()) >= window


def read_windows(
    conn: sa.Connection,
    tables: Tables,
    settings: Settings,
    features: tuple[str, ...],
    window: int,
    cid: str,
    lower: datetime | None,
    until: datetime | None,
    *,
    with_label: bool = False,
    timer: StageTimer | None = None,
) -> PreparedRows:
    """Rows with lower < timestamp <= until plus enough earlier rows, validated and windowed.

    Invariant: every window ending after `lower`, and whether it directly follows the one before,
    comes out as it would over the compressor's whole history. The earlier rows read for that are
    context: reading goes further back while rejected or imputed rows leave fewer than `window`
    exact rows at or before `lower`. `lower = None` reads from the first row.
    """
    timer = timer or StageTimer()
    impute = settings.data.missing_value_rule == "impute"
    distinct = 2 * window
    while True:
        with timer.stage("reading"):
            first = None if lower is None else nth_timestamp_before(conn, tables, settings, cid, lower, distinct)
            frame = read_rows(conn, tables, settings, cid, after=None if first is None else first - _EPSILON, until=until, with_label=with_label)
        with timer.stage("preprocessing"):
            clean = validated(frame, settings, features, window)
            raw_times = as_datetime64(frame[settings.source.timestamp_column])
        if first is None or _enough_context(raw_times, clean.times, lower, window, impute):
            break
        distinct *= 2  # invalid or imputed rows ate into the context: read further back
    with timer.stage("preprocessing"):
        windows = build_windows(clean.values, clean.times, window, settings.max_gap_s)
    return PreparedRows(frame, clean, windows)
