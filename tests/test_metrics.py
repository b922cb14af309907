"""Evaluation metrics against hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import (
    auroc,
    average_precision,
    event_report,
    label_events,
    point_metrics,
    precision_at_k,
)

T0 = np.datetime64("2024-01-01T00:00:00", "ns")


def minutes(*offsets: float) -> np.ndarray:
    """Timestamps `offsets` minutes after T0."""
    return T0 + (np.asarray(offsets, dtype=np.float64) * 60e9).astype("timedelta64[ns]")


# ------------------------------------------------------------------ ranking
def test_auroc_and_average_precision_by_hand():
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert auroc(labels, scores) == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered right
    # ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = 0.5 * 1 + 0.5 * 2/3
    assert average_precision(labels, scores) == pytest.approx(5 / 6)


def test_ranking_metrics_nan_with_one_class():
    assert math.isnan(auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(average_precision([1, 1], [0.1, 0.2]))


def test_precision_at_k():
    labels, scores = [1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.1, 0.2]
    assert precision_at_k(labels, scores, 1) == 1.0
    assert precision_at_k(labels, scores, 2) == 0.5
    assert precision_at_k(labels, scores, 3) == pytest.approx(2 / 3)
    assert precision_at_k(labels, scores, 50) == pytest.approx(2 / 5)  # k capped at n
    assert math.isnan(precision_at_k([], [], 3))
    with pytest.raises(ValueError):
        precision_at_k(labels, scores, 0)


# --------------------------------------------------------------- point-wise
def test_point_metrics_by_hand():
    labels = [1, 1, 1, 0, 0, 0, 0, 0]
    preds = [1, 1, 0, 1, 0, 0, 0, 0]
    m = point_metrics(labels, preds)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 4, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["far"] == pytest.approx(1 / 5) and m["mar"] == pytest.approx(1 / 3)


def test_point_metrics_degenerate():
    m = point_metrics([0, 0, 0], [0, 0, 0])  # no anomalies, no alarms
    assert m["far"] == 0.0 and math.isnan(m["mar"]) and math.isnan(m["f1"]) and math.isnan(m["precision"])
    m = point_metrics([1, 1], [0, 0])  # everything missed
    assert m["mar"] == 1.0 and m["f1"] == 0.0 and math.isnan(m["far"]) and math.isnan(m["precision"])


# ------------------------------------------------------------------ events
def test_label_events_runs():
    times = minutes(0, 1, 2, 3, 4, 5, 6)
    assert label_events(times, [1, 1, 0, 0, 1, 0, 1]) == [
        (times[0], times[1]),
        (times[4], times[4]),
        (times[6], times[6]),
    ]
    assert label_events(times, [0] * 7) == []
    assert label_events(times[:0], []) == []


def test_label_events_split_at_data_gap():
    times = minutes(0, 1, 2, 10, 11)
    assert label_events(times, [1, 1, 1, 1, 0]) == [(times[0], times[3])]
    assert label_events(times, [1, 1, 1, 1, 0], max_gap_s=90) == [(times[0], times[2]), (times[3], times[3])]


def test_event_report_by_hand():
    times = minutes(*range(60))  # one hour at 1-minute sampling
    labels = np.zeros(60, int)
    labels[10:20] = 1  # event A: minutes 10..19
    labels[30:35] = 1  # event B: minutes 30..34 (never alerted)
    labels[50:55] = 1  # event C: minutes 50..54
    alerts = minutes(13, 16, 5, 40, 50, 21)  # unsorted on purpose
    r = event_report(times, labels, alerts, interval_s=60)
    assert r["n_events"] == 3 and r["n_detected"] == 2
    assert r["event_recall"] == pytest.approx(2 / 3)
    assert [e["delay_min"] for e in r["events"]] == [3.0, None, 0.0]  # alert exactly at C's start: delay 0
    assert [e["detected"] for e in r["events"]] == [True, False, True]
    assert (r["events"][0]["start"], r["events"][0]["end"]) == (times[10], times[19])
    assert r["median_delay_min"] == 1.5 and r["max_delay_min"] == 3.0
    assert r["n_alerts"] == 6
    assert r["false_alarms"] == 3  # minutes 5, 21 and 40 lie outside every event
    assert r["observed_hours"] == 1.0 and r["false_alarms_per_hour"] == 3.0


def test_event_report_tolerance_after_event_end():
    times = minutes(*range(60))
    labels = np.zeros(60, int)
    labels[10:20] = 1
    alerts = minutes(21, 23)
    assert event_report(times, labels, alerts, interval_s=60)["false_alarms"] == 2
    r = event_report(times, labels, alerts, interval_s=60, tolerance_s=120)
    assert r["false_alarms"] == 1  # 21 is within 2 min of the end (19), 23 is not
    assert r["n_detected"] == 0  # an alert after the end does not detect the event


def test_event_report_no_events():
    times = minutes(*range(120))  # 2 hours
    r = event_report(times, np.zeros(120), minutes(3, 70), interval_s=60)
    assert r["n_events"] == 0 and r["events"] == [] and math.isnan(r["event_recall"])
    assert math.isnan(r["median_delay_min"]) and math.isnan(r["max_delay_min"])
    assert r["false_alarms"] == 2 and r["false_alarms_per_hour"] == 1.0


def test_event_report_no_alerts():
    times = minutes(*range(30))
    labels = np.zeros(30)
    labels[5:8] = 1
    r = event_report(times, labels, [], interval_s=30)  # 30 rows at 30 s: a quarter of an hour
    assert r["n_events"] == 1 and r["n_detected"] == 0 and r["event_recall"] == 0.0
    assert r["events"][0]["delay_min"] is None and math.isnan(r["max_delay_min"])
    assert r["n_alerts"] == 0 and r["false_alarms"] == 0
    assert r["observed_hours"] == 0.25 and r["false_alarms_per_hour"] == 0.0


def test_event_report_empty_data():
    r = event_report(minutes(), [], [], interval_s=30)
    assert r["n_events"] == 0 and r["observed_hours"] == 0.0 and math.isnan(r["false_alarms_per_hour"])
