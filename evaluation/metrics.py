"""Evaluation metrics: ranking (AUROC, AP, precision@k), point-wise (F1, FAR, MAR) and event-wise.

Labels are 0/1 per window or timestamp (1 = anomalous); scores are higher-is-more-anomalous.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _two_classes(labels: np.ndarray) -> bool:
    return len(np.unique(labels)) == 2


def auroc(labels, scores) -> float:
    """Area under the ROC curve; nan when the labels hold only one class."""
    labels = np.asarray(labels).astype(int)
    return float(roc_auc_score(labels, scores)) if _two_classes(labels) else float("nan")


def average_precision(labels, scores) -> float:
    """Average precision (area under the precision-recall curve); nan when only one class is present."""
    labels = np.asarray(labels).astype(int)
    return float(average_precision_score(labels, scores)) if _two_classes(labels) else float("nan")


def precision_at_k(labels, scores, k: int) -> float:
    """Share of anomalies among the k highest scores (ties broken by position; k capped at n)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    if len(labels) == 0:
        return float("nan")
    top = np.argsort(-scores, kind="stable")[:k]
    return float(labels[top].mean())


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def point_metrics(labels, predictions) -> dict:
    """Point-wise confusion counts and rates, as the SKAB benchmark defines them.

    FAR (false alarm rate) = FP / (FP + TN); MAR (missed alarm rate) = FN / (FN + TP);
    F1 = 2TP / (2TP + FP + FN). A rate whose denominator is zero is nan.
    """
    y, p = np.asarray(labels).astype(bool), np.asarray(predictions).astype(bool)
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    fn, tn = int((y & ~p).sum()), int((~y & ~p).sum())
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "far": _ratio(fp, fp + tn),
        "mar": _ratio(fn, fn + tp),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def label_events(times, labels, max_gap_s: float | None = None) -> list[tuple[np.datetime64, np.datetime64]]:
    """(start, end) timestamps of every run of consecutive 1-labels in time-sorted data.

    A run also ends where two labelled timestamps lie more than `max_gap_s` apart (a data gap).
    """
    times = np.asarray(times, dtype="datetime64[ns]")
    flags = np.asarray(labels).astype(bool)
    starts = flags.copy()
    starts[1:] &= ~flags[:-1]
    if max_gap_s is not None and len(times) > 1:
        gap = np.diff(times) > np.timedelta64(int(max_gap_s * 1e9), "ns")
        starts[1:] |= flags[1:] & gap
    ends = np.zeros_like(flags)
    ends[:-1] = flags[:-1] & (starts[1:] | ~flags[1:])
    ends[-1:] = flags[-1:]
    return list(zip(times[starts], times[ends]))


def event_report(
    times,
    labels,
    alert_times,
    interval_s: float,
    *,
    tolerance_s: float = 0.0,
    max_gap_s: float | None = None,
) -> dict:
    """Event-wise detection of labelled anomalies by alerts.

    An event is detected when an alert falls within [start, end]; its delay is the first such alert
    minus the start, in minutes. An alert is a false alarm when it falls outside every
    [start, end + tolerance_s]. Observed hours = len(times) * interval_s / 3600.
    Returns n_events, n_detected, event_recall, events (start, end, detected, delay_min per event),
    median_delay_min, max_delay_min, n_alerts, false_alarms, observed_hours, false_alarms_per_hour;
    statistics without data (no events, nothing detected, no hours) are nan.
    """
    events = label_events(times, labels, max_gap_s)
    alerts = np.sort(np.asarray(alert_times, dtype="datetime64[ns]"))
    starts = np.array([s for s, _ in events], dtype="datetime64[ns]")
    ends = np.array([e for _, e in events], dtype="datetime64[ns]")

    first = np.searchsorted(alerts, starts, side="left")  # first alert at or after each start
    detected = first < len(alerts)
    detected[detected] = alerts[first[detected]] <= ends[detected]
    delays = [
        float((alerts[i] - s) / np.timedelta64(60, "s")) if hit else None
        for s, i, hit in zip(starts, first, detected)
    ]

    owner = np.searchsorted(starts, alerts, side="right") - 1  # last event starting at or before each alert
    tolerance = np.timedelta64(int(tolerance_s * 1e9), "ns")
    inside = owner >= 0
    inside[inside] = alerts[inside] <= ends[owner[inside]] + tolerance
    false_alarms = int((~inside).sum())

    found = [d for d in delays if d is not None]
    hours = len(np.asarray(times)) * interval_s / 3600.0
    return {
        "n_events": len(events),
        "n_detected": int(detected.sum()),
        "event_recall": _ratio(int(detected.sum()), len(events)),
        "events": [
            {"start": s, "end": e, "detected": bool(hit), "delay_min": d}
            for (s, e), hit, d in zip(events, detected, delays)
        ],
        "median_delay_min": float(np.median(found)) if found else float("nan"),
        "max_delay_min": float(max(found)) if found else float("nan"),
        "n_alerts": len(alerts),
        "false_alarms": false_alarms,
        "observed_hours": hours,
        "false_alarms_per_hour": false_alarms / hours if hours else float("nan"),
    }
