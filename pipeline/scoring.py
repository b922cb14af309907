"""Scoring windows: per-feature errors -> score -> threshold -> consecutive trigger -> explanation."""
from __future__ import annotations

import numpy as np
import pandas as pd

from models.alerting import consecutive_counts, triggered
from models.artifacts import ModelBundle
from pipeline.windows import WindowSet

TOP_CONTRIBUTORS = 3
INFERENCE_CHUNK = 65_536


def top_features(errors: np.ndarray, features: tuple[str, ...], k: int = TOP_CONTRIBUTORS) -> list[str]:
    """Comma-separated names of the k signals with the largest error, per window."""
    if len(errors) == 0:
        return []
    order = np.argsort(-errors, axis=1)[:, :k]
    names = np.asarray(features, dtype=object)[order]
    return [", ".join(row) for row in names]


def feature_errors(bundle: ModelBundle, cid: str, ws: WindowSet) -> np.ndarray:
    """Per-feature errors of every window, computed in bounded-memory chunks."""
    out = np.empty((len(ws), len(bundle.features)), dtype=np.float32)
    for offset, windows in ws.chunks(INFERENCE_CHUNK):
        out[offset : offset + len(windows)] = bundle.detector.feature_errors(windows, cid)
    return out


def score_windows(
    bundle: ModelBundle, cid: str, ws: WindowSet, error_columns: tuple[str, ...], initial_count: int = 0
) -> pd.DataFrame:
    """One row per window with score, threshold, anomaly flag, run length, trigger and explanation."""
    errors = feature_errors(bundle, cid, ws)
    scores = errors.mean(axis=1).astype(np.float64)
    threshold = bundle.threshold_for(cid)
    anomalous = scores > threshold
    counts = consecutive_counts(anomalous, ws.breaks, initial_count)
    fired = triggered(counts, bundle.consecutive_trigger)
    frame = pd.DataFrame(
        {
            "window_end": ws.end_times,
            "score": scores,
            "threshold": threshold,
            "is_anomaly": anomalous,
            "consecutive_count": counts,
            "triggered": fired,
        }
    )
    explained = np.flatnonzero(anomalous)
    labels = np.full(len(ws), None, dtype=object)
    labels[explained] = top_features(errors[explained], bundle.features)
    frame["top_features"] = labels
    for i, column in enumerate(error_columns):
        frame[column] = errors[:, i].astype(np.float64)
    return frame
