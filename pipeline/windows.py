"""Gap-aware sliding windows over a strided view of the rows (copied one chunk at a time)."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from core.windows import WindowSet


def segment_starts(times: np.ndarray, max_gap_s: float) -> np.ndarray:
    """True at each row that starts a new contiguous segment (first row, or after a gap)."""
    starts = np.ones(len(times), dtype=bool)
    if len(times) > 1:
        spacing = np.diff(times).astype("timedelta64[ns]").astype(np.int64) / 1e9
        starts[1:] = spacing > max_gap_s
    return starts


def count_gaps(times: np.ndarray, max_gap_s: float) -> int:
    """Number of gaps (spacing above max_gap_s) in a sorted time array."""
    return int(segment_starts(np.asarray(times, dtype="datetime64[ns]"), max_gap_s)[1:].sum())


def build_windows(values: np.ndarray, times: np.ndarray, window: int, max_gap_s: float) -> WindowSet:
    """All windows of `window` consecutive rows that do not span a gap.

    `values` (rows, features) and `times` (rows,) must be sorted by time, without duplicates.
    A window ending at row i exists when rows i-window+1..i lie in one segment.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    times = np.asarray(times, dtype="datetime64[ns]")
    if len(values) < window:
        empty = np.zeros((0, window, values.shape[1]), np.float32)
        return WindowSet(empty, np.zeros(0, np.int64), times[:0], np.zeros(0, bool))
    segment_id = np.cumsum(segment_starts(times, max_gap_s))
    view = sliding_window_view(values, window, axis=0).transpose(0, 2, 1)
    keep = np.flatnonzero(segment_id[window - 1 :] == segment_id[: len(values) - window + 1])
    breaks = np.ones(len(keep), dtype=bool)
    breaks[1:] = np.diff(keep) != 1
    return WindowSet(view, keep, times[keep + window - 1], breaks)
