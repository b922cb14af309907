"""Scoring a labelled date range in memory and comparing scores and alerts with the labels.

Nothing is written to the result tables. Per compressor, the windows ending in [start, end] are
scored with the given model version (with enough rows before `start` for the first window); the
alarm rule's state starts fresh at `start`. A window is labelled anomalous when the label
of its last row is 1 (a missing label counts as 0).

Metrics, per compressor and pooled over the fleet:
- ranking: AUROC, average precision, precision@k for k = the number of labelled windows and for a
  fixed k; pooled ranking uses score / threshold, so compressors with different thresholds compare;
- point-wise: F1, FAR and MAR of the per-window anomaly flag (score above threshold);
- event-wise: labelled events are runs of labelled rows in the range (a data gap splits a run);
  an event is detected when an alert falls inside it, its delay is the first such alert minus
  its start; an alert outside every event (extended by one window length) is a false alarm.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.errors import DataValidationError, ModelArtifactError
from core.settings import Settings
from db.schema import Tables
from db.source import check_source_columns, list_compressors
from evaluation.metrics import auroc, average_precision, event_report, point_metrics, precision_at_k
from models.artifacts import ModelBundle
from pipeline.scoring import score_windows
from pipeline.prepare import read_windows

log = logging.getLogger(__name__)
FIXED_K = 100
OVERALL = "overall"
_EPSILON = timedelta(microseconds=1)
METRIC_COLUMNS = (
    "windows",
    "labelled_windows",
    "auroc",
    "average_precision",
    "precision_at_labelled",
    "precision_at_fixed_k",
    "f1",
    "far",
    "mar",
    "alerts",
    "false_alarms",
    "observed_hours",
    "false_alarms_per_hour",
    "events",
    "events_detected",
    "event_recall",
    "median_delay_min",
    "max_delay_min",
)


@dataclass
class EvaluationResult:
    """Per-window scores with labels, metrics (one row per compressor and `overall`) and labelled events.

    frame:   compressor_id, window_end, label, score, threshold, score_ratio, is_anomaly,
             consecutive_count, triggered, in_alert, alarm_state, top_features
    metrics: METRIC_COLUMNS, indexed by scope (`overall` first, then each compressor)
    events:  compressor_id, start, end, detected, first_alert, delay_min
    """

    frame: pd.DataFrame
    metrics: pd.DataFrame
    events: pd.DataFrame
    model_version: str
    detector: str
    threshold_rule: str
    alarm_rule: str
    start: datetime
    end: datetime
    fixed_k: int
    tolerance_s: float

    @property
    def overall(self) -> dict:
        """The pooled metrics as plain Python numbers (counts as int)."""
        return {column: self.metrics[column].loc[OVERALL].item() for column in self.metrics.columns}

    @property
    def compressors(self) -> list[str]:
        return [scope for scope in self.metrics.index if scope != OVERALL]


def check_labels(conn: sa.Connection, tables: Tables, settings: Settings) -> str:
    """The label column's name; DataValidationError when none is configured or the table lacks it."""
    label = settings.source.label_column
    if not label:
        raise DataValidationError("evaluate needs labels, but no label column is configured ([source] label_column)")
    check_source_columns(conn, tables, settings)
    present = {c["name"].lower() for c in sa.inspect(conn).get_columns(tables.source.name)}
    if label.lower() not in present:
        raise DataValidationError(f"source table {tables.source.name!r} has no label column {label!r}: evaluate needs 0/1 labels")
    return label


def _row_labels(frame: pd.DataFrame, timestamp_column: str, label: str, times: np.ndarray) -> np.ndarray:
    """0/1 label at each validated timestamp (duplicate raw rows: 1 if any is 1)."""
    raw_times = pd.to_datetime(frame[timestamp_column], errors="coerce").to_numpy(dtype="datetime64[ns]")
    flags = pd.to_numeric(frame[label], errors="coerce").fillna(0).to_numpy(dtype=np.float64) > 0
    by_time = pd.Series(flags, index=raw_times).groupby(level=0).max()
    return by_time.reindex(times, fill_value=False).to_numpy(dtype=bool)


def score_compressor(
    conn: sa.Connection, tables: Tables, settings: Settings, bundle: ModelBundle, cid: str, start: datetime, end: datetime, label: str
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(scored windows ending in [start, end] with their labels, row times in range, row labels in range)."""
    before = start - _EPSILON
    rows = read_windows(conn, tables, settings, bundle.features, bundle.window, cid, before, end, with_label=True)
    frame, clean = rows.frame, rows.clean
    windows = rows.windows.after(np.datetime64(before, "ns"))
    ts = settings.source.timestamp_column
    row_labels = _row_labels(frame, ts, label, clean.times)
    in_range = clean.times >= np.datetime64(start, "ns")
    if not len(windows):
        return pd.DataFrame(), clean.times[in_range], row_labels[in_range]
    scored = score_windows(bundle, cid, windows, ())
    scored.insert(0, "compressor_id", cid)
    scored.insert(2, "label", row_labels[windows.index + bundle.window - 1].astype(np.int8))
    scored.insert(5, "score_ratio", scored["score"] / scored["threshold"])
    return scored, clean.times[in_range], row_labels[in_range]


def range_metrics(windows: pd.DataFrame, report: dict, fixed_k: int) -> dict:
    """METRIC_COLUMNS for a set of scored, labelled windows and their event report."""
    labels = windows["label"].to_numpy(dtype=bool)
    ranking = windows["score_ratio"].to_numpy(dtype=np.float64)
    labelled = int(labels.sum())
    point = point_metrics(labels, windows["is_anomaly"].to_numpy(dtype=bool))
    return {
        "windows": len(windows),
        "labelled_windows": labelled,
        "auroc": auroc(labels, ranking),
        "average_precision": average_precision(labels, ranking),
        "precision_at_labelled": precision_at_k(labels, ranking, labelled) if labelled else float("nan"),
        "precision_at_fixed_k": precision_at_k(labels, ranking, fixed_k),
        "f1": point["f1"],
        "far": point["far"],
        "mar": point["mar"],
        "alerts": report["n_alerts"],
        "false_alarms": report["false_alarms"],
        "observed_hours": report["observed_hours"],
        "false_alarms_per_hour": report["false_alarms_per_hour"],
        "events": report["n_events"],
        "events_detected": report["n_detected"],
        "event_recall": report["event_recall"],
        "median_delay_min": report["median_delay_min"],
        "max_delay_min": report["max_delay_min"],
    }


def pooled_report(reports: list[dict]) -> dict:
    """Event statistics over several compressors' event reports (sums, pooled delays)."""
    events = [e for r in reports for e in r["events"]]
    delays = [e["delay_min"] for e in events if e["detected"]]
    detected, hours, false_alarms = len(delays), sum(r["observed_hours"] for r in reports), sum(r["false_alarms"] for r in reports)
    return {
        "n_events": len(events),
        "n_detected": detected,
        "event_recall": detected / len(events) if events else float("nan"),
        "median_delay_min": float(np.median(delays)) if delays else float("nan"),
        "max_delay_min": float(max(delays)) if delays else float("nan"),
        "n_alerts": sum(r["n_alerts"] for r in reports),
        "false_alarms": false_alarms,
        "observed_hours": hours,
        "false_alarms_per_hour": false_alarms / hours if hours else float("nan"),
    }


def _event_rows(cid: str, report: dict, alerts: np.ndarray) -> list[dict]:
    """One row per labelled event, with the first alert inside it (NaT when missed)."""
    first = np.searchsorted(alerts, np.array([e["start"] for e in report["events"]], dtype="datetime64[ns]"), side="left")
    return [
        {
            "compressor_id": cid,
            "start": pd.Timestamp(e["start"]),
            "end": pd.Timestamp(e["end"]),
            "detected": e["detected"],
            "first_alert": pd.Timestamp(alerts[i]) if e["detected"] else pd.NaT,
            "delay_min": e["delay_min"] if e["detected"] else float("nan"),
        }
        for e, i in zip(report["events"], first)
    ]


def evaluate_range(
    engine: sa.Engine,
    tables: Tables,
    settings: Settings,
    bundle: ModelBundle,
    start: datetime,
    end: datetime,
    compressors: list[str] | None = None,
    fixed_k: int = FIXED_K,
) -> EvaluationResult:
    """Score [start, end] with `bundle` per compressor and compare with the source table's labels.

    Default compressors: those in the source table that the model knows (others are logged and
    skipped); a compressor named explicitly must be in the model.
    """
    if end < start:
        raise DataValidationError(f"evaluation end {end} is before its start {start}")
    if tuple(bundle.features) != tuple(settings.data.features):
        raise ModelArtifactError(f"model version {bundle.version} was trained on features {list(bundle.features)}, but the configuration lists {list(settings.data.features)}")
    started = time.perf_counter()
    parts: list[CompressorScores] = []
    with engine.connect() as conn:
        label = check_labels(conn, tables, settings)
        if compressors:
            for cid in compressors:
                bundle.threshold_for(cid)
        else:
            present = list_compressors(conn, tables, settings)
            compressors = [c for c in present if c in bundle.thresholds]
            unknown = [c for c in present if c not in bundle.thresholds]
            if unknown:
                log.warning("evaluate: skipping compressor(s) not in model %s: %s", bundle.version, ", ".join(unknown))
        for cid in compressors:
            began = time.perf_counter()
            scored, times, labels = score_compressor(conn, tables, settings, bundle, cid, start, end, label)
            if scored.empty:
                log.info("evaluate: compressor %s: no windows in range (%d rows)", cid, len(times))
                continue
            parts.append(CompressorScores(cid, scored, times, labels))
            log.info(
                "evaluate: compressor %s: %d rows, %d windows (%d labelled), %d alerts (%.2f s)",
                cid, len(times), len(scored), int(scored["label"].sum()), int(scored["triggered"].sum()), time.perf_counter() - began,
            )
    if not parts:
        raise DataValidationError(f"nothing to evaluate: no windows end between {start} and {end} for compressor(s) {', '.join(compressors) or '(none)'}")
    result = summarise(parts, settings, bundle, start, end, fixed_k)
    log.info(
        "evaluate: model %s, %d compressors, %d windows, %d alerts, %d/%d events detected in %.2f s",
        bundle.version, len(parts), len(result.frame), int(result.frame["triggered"].sum()), int(result.events["detected"].sum()), len(result.events),
        time.perf_counter() - started,
    )
    return result


@dataclass(frozen=True)
class CompressorScores:
    """One compressor's scored windows (with `compressor_id`, `label` and `score_ratio` columns), its row
    times in range and their 0/1 labels."""

    compressor_id: str
    scored: pd.DataFrame
    times: np.ndarray
    labels: np.ndarray


def summarise(parts: list[CompressorScores], settings: Settings, bundle: ModelBundle, start: datetime, end: datetime, fixed_k: int = FIXED_K) -> EvaluationResult:
    """Metrics per compressor and pooled, and the labelled events with their first alert, of scored windows.

    The one place event recall, false alarms and delays are computed: `evaluate` (windows scored in
    memory) and the demo (windows the scheduler stored) both report through it.
    """
    tolerance_s = bundle.window * settings.data.sampling_interval_s
    reports, events, frames = {}, [], []
    for part in parts:
        scored = part.scored
        alerts = np.sort(scored.loc[scored["triggered"], "window_end"].to_numpy(dtype="datetime64[ns]"))
        reports[part.compressor_id] = event_report(
            part.times, part.labels, alerts, settings.data.sampling_interval_s, tolerance_s=tolerance_s, max_gap_s=settings.max_gap_s
        )
        events += _event_rows(part.compressor_id, reports[part.compressor_id], alerts)
        frames.append(scored)
    frame = pd.concat(frames, ignore_index=True)
    rows = {OVERALL: range_metrics(frame, pooled_report(list(reports.values())), fixed_k)}
    for cid, report in reports.items():
        rows[cid] = range_metrics(frame[frame["compressor_id"] == cid], report, fixed_k)
    metrics = pd.DataFrame.from_dict(rows, orient="index", columns=list(METRIC_COLUMNS))
    metrics.index.name = "scope"
    event_frame = pd.DataFrame(events, columns=["compressor_id", "start", "end", "detected", "first_alert", "delay_min"])
    return EvaluationResult(
        frame=frame,
        metrics=metrics,
        events=event_frame,
        model_version=bundle.version,
        detector=bundle.detector.name,
        threshold_rule=bundle.threshold_rule,
        alarm_rule=bundle.alarm.describe(),
        start=start,
        end=end,
        fixed_k=fixed_k,
        tolerance_s=tolerance_s,
    )
