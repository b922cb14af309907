"""Normal-period windows for training, read per compressor from the source table.

A compressor whose range holds more rows than `training.max_windows_per_compressor` is streamed
in chunks (keyset pagination on the timestamp) and an evenly strided sample of its windows is
kept, so memory stays bounded by the cap plus one chunk whatever the number of rows.
"""
from __future__ import annotations

import logging
import math
import time
from datetime import datetime
from typing import Iterator

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.errors import SettingsError
from core.settings import Settings
from core.windows import WindowSet
from db.schema import Tables
from db.source import list_compressors, read_rows, span
from models.scaler import RowMoments
from pipeline.prepare import window_rows

log = logging.getLogger(__name__)


def normal_rows(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Rows not labelled as faulty (all rows when the source has no label column)."""
    label = settings.source.label_column
    if not label or label not in frame.columns:
        return frame
    flags = pd.to_numeric(frame[label], errors="coerce").fillna(0)
    return frame.loc[flags == 0]


def _windows(frame: pd.DataFrame, settings: Settings) -> WindowSet:
    """Windows of a raw frame's normal rows (after validation)."""
    data = settings.data
    return window_rows(normal_rows(frame, settings), settings, data.features, data.window).windows


def stream_normal_windows(
    conn: sa.Connection, tables: Tables, settings: Settings, compressor_id: str,
    start: datetime | None, end: datetime | None, chunk_rows: int,
) -> Iterator[WindowSet]:
    """The windows of a whole read of [start, end], yielded chunk by chunk in time order.

    Each chunk is read after the previous one's last timestamp; the previous chunk's last `window`
    rows are prepended as context, so windows (and gap filling) across chunk boundaries match a
    whole read. A full chunk's last timestamp is left to the next chunk so duplicates stay together.
    """
    ts_column = settings.source.timestamp_column
    after = start - pd.Timedelta(microseconds=1) if start else None
    context = None
    while True:
        chunk = read_rows(conn, tables, settings, compressor_id, after=after, until=end, with_label=True, limit=chunk_rows)
        full = len(chunk) == chunk_rows
        if full:
            last = chunk[ts_column].iloc[-1]
            trimmed = chunk.loc[chunk[ts_column] < last]
            chunk = trimmed if len(trimmed) else chunk
        if chunk.empty:
            return
        frame = chunk if context is None else pd.concat([context, chunk], ignore_index=True)
        ws = _windows(frame, settings)
        if context is not None:
            ws = ws.after(np.datetime64(pd.Timestamp(context[ts_column].iloc[-1]), "ns"))
        yield ws
        if not full:
            return
        after = chunk[ts_column].iloc[-1]
        context = chunk.iloc[-settings.data.window :]


def sample_normal_windows(
    conn: sa.Connection, tables: Tables, settings: Settings, compressor_id: str,
    start: datetime | None, end: datetime | None, stride: int,
) -> tuple[WindowSet, RowMoments]:
    """Every `stride`-th window of [start, end], streamed chunk by chunk, and the moments of the
    last rows of all windows (what the scaler is fitted on)."""
    kept, end_times, seen = [], [], 0
    moments = RowMoments(len(settings.data.features))
    for ws in stream_normal_windows(conn, tables, settings, compressor_id, start, end, settings.scheduler.read_chunk_rows):
        positions = np.arange((-seen) % stride, len(ws), stride)
        kept.append(ws.view[ws.index[positions]])
        end_times.append(ws.end_times[positions])
        moments.add(ws.last_rows())
        seen += len(ws)
    windows = np.concatenate(kept) if kept else np.zeros((0, settings.data.window, len(settings.data.features)), np.float32)
    times = np.concatenate(end_times) if end_times else np.zeros(0, "datetime64[ns]")
    log.info("training data %s: streamed %d windows, kept every %d-th (%d)", compressor_id, seen, stride, len(windows))
    return WindowSet(windows, np.arange(len(windows)), times, np.ones(len(windows), bool)), moments


def _check_rule_allows_sampling(settings: Settings, compressor_id: str, rows: int) -> None:
    """The alarm-budget rule counts runs of consecutive windows, which a strided sample does not keep."""
    if settings.detection.threshold_rule == "alarm_budget":
        raise SettingsError(
            f"compressor {compressor_id}: {rows} rows exceed training.max_windows_per_compressor "
            f"({settings.training.max_windows_per_compressor}); the alarm_budget threshold rule needs every window, "
            "so raise the cap, narrow the training range or use threshold_rule = \"mean_std\""
        )


def load_training_data(
    engine: sa.Engine,
    tables: Tables,
    settings: Settings,
    start: datetime | None,
    end: datetime | None,
    compressors: list[str] | None = None,
) -> tuple[dict[str, WindowSet], dict[str, RowMoments]]:
    """Windows of normal rows in [start, end] per compressor (labelled rows break windows like gaps),
    and, for each compressor streamed under the window cap, the moments of all its rows."""
    sets: dict[str, WindowSet] = {}
    moments: dict[str, RowMoments] = {}
    cap = settings.training.max_windows_per_compressor
    with engine.connect() as conn:
        for cid in compressors or list_compressors(conn, tables, settings):
            started = time.perf_counter()
            after = start - pd.Timedelta(microseconds=1) if start else None
            rows = span(conn, tables, settings, cid, after, end)[0]
            if rows > cap:
                _check_rule_allows_sampling(settings, cid, rows)
                sets[cid], moments[cid] = sample_normal_windows(conn, tables, settings, cid, start, end, math.ceil(rows / cap))
            else:
                sets[cid] = _windows(read_rows(conn, tables, settings, cid, after=after, until=end, with_label=True), settings)
            log.info("training data %s: %d rows, %d windows in %.1f s", cid, rows, len(sets[cid]), time.perf_counter() - started)
    return sets, moments


def load_normal_windows(
    engine: sa.Engine,
    tables: Tables,
    settings: Settings,
    start: datetime | None,
    end: datetime | None,
    compressors: list[str] | None = None,
) -> dict[str, WindowSet]:
    """Windows of normal rows in [start, end] per compressor (see load_training_data)."""
    return load_training_data(engine, tables, settings, start, end, compressors)[0]
