"""Gap-aware sliding windows over a strided view of the rows (copied one chunk at a time)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class WindowSet:
    """Windows of one compressor, in time order.

    view:      (m, window, features) strided view over the rows (no copy)
    index:     (n,) positions in `view` of the windows kept (those that span no gap)
    end_times: (n,) datetime64[ns] timestamp of each window's last row
    breaks:    (n,) True where a window does not directly follow the previous one
    """

    view: np.ndarray
    index: np.ndarray
    end_times: np.ndarray
    breaks: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    @property
    def windows(self) -> np.ndarray:
        """All kept windows as one array (a copy: use `chunks` for large sets)."""
        return self.view[self.index]

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(offset, windows) pieces of at most `size` windows, copied one at a time."""
        for start in range(0, len(self), size):
            yield start, self.view[self.index[start : start + size]]

    def take(self, positions: np.ndarray | slice) -> "WindowSet":
        """A subset; a skipped window counts as a break."""
        positions = np.arange(len(self))[positions]
        breaks = self.breaks[positions].copy()
        if len(positions):
            breaks[1:] |= np.diff(positions) != 1
        return WindowSet(self.view, self.index[positions], self.end_times[positions], breaks)

    def after(self, timestamp: np.datetime64 | None) -> "WindowSet":
        """Windows ending strictly after `timestamp` (all of them when it is None)."""
        if timestamp is None:
            return self
        return self.take(slice(int(np.searchsorted(self.end_times, timestamp, side="right")), None))

    def last_rows(self) -> np.ndarray:
        """The last row of every kept window: (n, features)."""
        return self.view[self.index, -1, :]


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
