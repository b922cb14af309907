"""The windows of one compressor: a strided view over its rows, the windows kept, their end times
and breaks. Built by pipeline/windows.py; consumed by the detectors (models/) and the pipeline."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np


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
        """(offset, windows) pieces of at most `size` windows, copied one at a time (a run of
        consecutive windows as one slice of the view: far cheaper than gathering window by window)."""
        for start in range(0, len(self), size):
            index = self.index[start : start + size]
            if index[-1] - index[0] == len(index) - 1:
                yield start, self.view[index[0] : index[-1] + 1].copy()
            else:
                yield start, self.view[index]

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
