"""The evaluation report: `report.md` (settings, metric tables, labelled events) and one PNG per compressor."""
from __future__ import annotations

import logging
import math
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from core.settings import Settings
from evaluation.evaluate import OVERALL, EvaluationResult
from evaluation.plots import plot_scores

log = logging.getLogger(__name__)
REPORT_FILE = "report.md"


def metric_labels(fixed_k: int) -> dict[str, str]:
    """Column name -> heading used in the report and on the console."""
    return {
        "windows": "windows",
        "labelled_windows": "labelled",
        "auroc": "AUROC",
        "average_precision": "AP",
        "precision_at_labelled": "P@k (k = labelled)",
        "precision_at_fixed_k": f"P@{fixed_k}",
        "f1": "F1",
        "far": "FAR",
        "mar": "MAR",
        "alerts": "alerts",
        "false_alarms": "false alarms",
        "false_alarms_per_hour": "false alarms/h",
        "events": "events",
        "events_detected": "detected",
        "event_recall": "event recall",
        "median_delay_min": "median delay (min)",
        "max_delay_min": "max delay (min)",
    }


COUNT_COLUMNS = {"windows", "labelled_windows", "alerts", "false_alarms", "events", "events_detected"}


def fmt(value) -> str:
    """A table cell: numbers to 3 decimals, times to the second, missing as n/a."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (pd.Timestamp, datetime)):
        return pd.Timestamp(value).isoformat(sep=" ", timespec="seconds")
    return str(value)


def fmt_metric(column: str, value) -> str:
    """A metric cell: counts as integers, everything else through fmt."""
    value = float(value)
    return str(int(value)) if column in COUNT_COLUMNS and not math.isnan(value) else fmt(value)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_markdown(result: EvaluationResult) -> str:
    """The metric table: one row for the fleet, one per compressor."""
    labels = metric_labels(result.fixed_k)
    rows = [[str(scope)] + [fmt_metric(c, values[c]) for c in labels] for scope, values in result.metrics.iterrows()]
    return _markdown(["scope", *labels.values()], rows)


def events_markdown(result: EvaluationResult) -> str:
    """One row per labelled event: when, whether an alert fell inside it, and how late."""
    if result.events.empty:
        return "No labelled events in the range."
    rows = []
    for e in result.events.itertuples(index=False):
        minutes = (e.end - e.start).total_seconds() / 60
        rows.append([str(e.compressor_id), fmt(e.start), fmt(e.end), fmt(float(minutes)), fmt(bool(e.detected)), fmt(e.first_alert), fmt(float(e.delay_min))])
    return _markdown(["compressor", "start", "end", "duration (min)", "detected", "first alert", "delay (min)"], rows)


def overall_text(result: EvaluationResult) -> str:
    """The fleet-wide metrics as a two-column console table."""
    labels = metric_labels(result.fixed_k)
    overall = result.metrics.loc[OVERALL]
    width = max(len(h) for h in labels.values())
    return "\n".join(f"{heading:<{width}}  {fmt_metric(c, overall[c])}" for c, heading in labels.items())


def _file_name(cid: str, taken: set[str]) -> str:
    base = "scores_" + (re.sub(r"[^A-Za-z0-9_.-]", "_", cid) or "compressor")
    name, n = f"{base}.png", 1
    while name in taken:
        n += 1
        name = f"{base}_{n}.png"
    taken.add(name)
    return name


def write_plots(result: EvaluationResult, out_dir: Path) -> dict[str, Path]:
    """One PNG per compressor: score and threshold over time, alerts marked, labelled events shaded."""
    taken: set[str] = set()
    paths = {}
    for cid in result.compressors:
        scored = result.frame[result.frame["compressor_id"] == cid]
        events = result.events[result.events["compressor_id"] == cid]
        title = f"{cid}: model {result.model_version} ({result.detector}), labelled events shaded"
        paths[cid] = plot_scores(scored, events, out_dir / _file_name(cid, taken), title)
    return paths


def write_report(result: EvaluationResult, settings: Settings, out_dir: Path) -> Path:
    """Write the plots and `report.md` into out_dir (created if missing); return the report's path."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result, out_dir)
    data, src = settings.data, settings.source
    settings_rows = [
        ["range (window ends)", f"{fmt(result.start)} .. {fmt(result.end)}"],
        ["compressors", ", ".join(result.compressors)],
        ["model version", result.model_version],
        ["detector", result.detector],
        ["threshold rule", result.threshold_rule],
        ["alarm rule", f"{result.alarm_rule} windows (state fresh at the range start)"],
        ["window", f"{data.window} rows at {data.sampling_interval_s:g} s"],
        ["max gap", f"{settings.max_gap_s:g} s"],
        ["missing-value rule", data.missing_value_rule],
        ["source table / label column", f"{src.table} / {src.label_column}"],
        ["false-alarm tolerance after an event", f"{result.tolerance_s:g} s (one window)"],
        ["written at (UTC)", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")],
    ]
    text = [
        f"# Evaluation of model {result.model_version}",
        "",
        "## Settings",
        "",
        _markdown(["setting", "value"], settings_rows),
        "",
        "## Metrics",
        "",
        "A window is labelled anomalous when the label of its last row is 1. Ranking metrics (AUROC, AP, "
        "precision@k) use score / threshold, so the pooled row compares compressors on one scale; "
        "F1, FAR and MAR are point-wise, on the per-window anomaly flag (score above threshold). "
        "Events are runs of labelled rows; an alert inside an event detects it, an alert outside every "
        "event (extended by the tolerance) is a false alarm. Delay = first alert inside the event minus its start.",
        "",
        metrics_markdown(result),
        "",
        "## Labelled events",
        "",
        events_markdown(result),
        "",
        "## Plots",
        "",
        *[f"![{cid}]({path.name})" for cid, path in plots.items()],
        "",
    ]
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(text), encoding="utf-8")
    log.info("evaluation report: %s and %d plots in %.2f s", path, len(plots), time.perf_counter() - started)
    return path
