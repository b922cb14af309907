"""Consecutive-window trigger: an alert fires only after N anomalous windows in a row."""
from __future__ import annotations

import numpy as np


def consecutive_counts(is_anomaly: np.ndarray, breaks: np.ndarray | None = None, initial: int = 0) -> np.ndarray:
    """Length of the current anomalous run at each window.

    `breaks[i]` True means window i does not follow window i-1 (a data gap): the run restarts.
    `initial` is the run length carried over from the previous batch.
    """
    anomalous = np.asarray(is_anomaly, dtype=bool)
    n = len(anomalous)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    gap = np.zeros(n, dtype=bool) if breaks is None else np.asarray(breaks, dtype=bool)
    previous = np.r_[False, anomalous[:-1]]
    run_start = anomalous & (~previous | gap)
    idx = np.arange(n)
    last_start = np.maximum.accumulate(np.where(run_start, idx, -1))
    counts = np.where(anomalous, idx - last_start + 1, 0)
    if initial and anomalous[0] and not gap[0]:
        counts = np.where(anomalous & (last_start == 0), counts + initial, counts)
    return counts.astype(np.int64)


def triggered(counts: np.ndarray, trigger: int) -> np.ndarray:
    """True exactly at the window where a run reaches `trigger` windows (one alert per run)."""
    return np.asarray(counts) == trigger


def count_alert_events(scores: np.ndarray, threshold: float, trigger: int, breaks: np.ndarray | None = None) -> int:
    """Number of alert events the threshold would raise on a score series."""
    counts = consecutive_counts(np.asarray(scores) > threshold, breaks)
    return int(triggered(counts, trigger).sum())
