"""Scoring windows: per-feature errors -> score -> threshold -> alarm rule (episodes) -> explanation.

The windows of one compressor at a time go through the detector (INFERENCE_TURN): its inference
threads already use every core, so the compressor holding the turn is scored soonest, and its
alarm rule and writing overlap the next compressor's inference while others read. Compressors
scored side by side (scheduler.parallel_compressors) so form a bounded pipeline: at most one
compressor per scoring thread holds its rows in memory.
"""
from __future__ import annotations

import threading
from contextlib import nullcontext

import numpy as np
import pandas as pd

from core.windows import WindowSet
from models.alarms import AlarmState
from models.artifacts import ModelBundle
from pipeline.suppression import RUNNING, Suppression
from pipeline.timing import StageTimer

TOP_CONTRIBUTORS = 3
INFERENCE_CHUNK = 65_536
INFERENCE_TURN = threading.Lock()


def top_features(contributions: np.ndarray, features: tuple[str, ...], k: int = TOP_CONTRIBUTORS) -> list[str]:
    """Comma-separated names of the k signals that contribute most, per window."""
    if len(contributions) == 0:
        return []
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    names = np.asarray(features, dtype=object)[order]
    return [", ".join(row) for row in names]


def score_in_chunks(bundle: ModelBundle, cid: str, ws: WindowSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, per-feature errors and contributions of every window, in bounded-memory chunks."""
    n, f = len(ws), len(bundle.features)
    scores, errors, contributions = np.empty(n), np.empty((n, f)), np.empty((n, f))
    for offset, windows in ws.chunks(INFERENCE_CHUNK):
        part = slice(offset, offset + len(windows))
        scores[part], errors[part], contributions[part] = bundle.detector.anomaly_score_details(windows, cid)
    return scores, errors, contributions


def finite_only(ws: WindowSet, scores: np.ndarray, errors: np.ndarray, contributions: np.ndarray):
    """Drop the windows whose score or per-feature errors are not finite (overflowed); a dropped window is a break.

    No NaN or infinite score is ever returned: the caller counts the windows that are missing.
    """
    finite = np.isfinite(scores) & np.isfinite(errors).all(axis=1)
    if finite.all():
        return ws, scores, errors, contributions
    keep = np.flatnonzero(finite)
    return ws.take(keep), scores[keep], errors[keep], contributions[keep]


def score_windows(
    bundle: ModelBundle,
    cid: str,
    ws: WindowSet,
    error_columns: tuple[str, ...],
    initial: AlarmState | None = None,
    timer: StageTimer | None = None,
    suppression: Suppression | None = None,
) -> pd.DataFrame:
    """One row per window with a finite score: threshold, anomaly flag, run length, alarm episode and explanation.

    `initial` is the alarm state after the window before the first one (carried across batches);
    `triggered` is True where an alert episode opens, `in_alert` while one is open. With
    `suppression`, the columns operating_mode and maintenance say why a window may open no episode.
    """
    with timer.stage("queued") if timer else nullcontext():
        INFERENCE_TURN.acquire()
    try:
        with timer.stage("inference") if timer else nullcontext():
            scores, errors, contributions = score_in_chunks(bundle, cid, ws)
    finally:
        INFERENCE_TURN.release()
    ws, scores, errors, contributions = finite_only(ws, scores, errors, contributions)
    threshold = bundle.threshold_for(cid)
    modes = maintenance = suppressed = None
    if suppression is not None:
        modes, maintenance = suppression.modes(ws), suppression.under_maintenance(ws.end_times)
        suppressed = (modes != RUNNING) | maintenance
    trace = bundle.alarm.apply(scores, threshold, ws.breaks, initial, suppressed)
    anomalous = trace.is_anomaly
    frame = pd.DataFrame(
        {
            "window_end": ws.end_times,
            "score": scores,
            "threshold": threshold,
            "is_anomaly": anomalous,
            "consecutive_count": trace.run,
            "triggered": trace.triggered,
            "in_alert": trace.in_episode,
            "alarm_state": trace.states,
        }
    )
    explained = np.flatnonzero(anomalous)
    labels = np.full(len(ws), None, dtype=object)
    labels[explained] = top_features(contributions[explained], bundle.features)
    frame["top_features"] = labels
    if suppression is not None:
        frame["operating_mode"], frame["maintenance"] = modes, maintenance
    for i, column in enumerate(error_columns):
        frame[column] = errors[:, i].astype(np.float64)
    return frame
