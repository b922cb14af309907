"""`demo`: the whole story on an embedded SQLite database.

Simulate a fleet -> train on the first days' normal rows -> run the scheduler over the rest ->
print a per-compressor table against the labelled faults -> write a PNG plot.
"""
from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.settings import Settings
from db.engine import make_engine
from db.schema import build_tables, create_all
from db.source import write_telemetry
from evaluation.evaluate import CompressorScores, EvaluationResult, summarise
from evaluation.plots import plot_scores
from pipeline.publish import train_and_publish
from scheduler.runner import Runner
from simulation.fleet import simulate_fleet

log = logging.getLogger(__name__)
DEMO_START = datetime(2026, 1, 1)


TABLE_COLUMNS = ("windows", "labelled_windows", "alerts", "events", "events_detected", "false_alarms", "false_alarms_per_hour", "median_delay_min")


def stored_report(scored: pd.DataFrame, telemetry: pd.DataFrame, settings: Settings, bundle, start: datetime, end: datetime) -> EvaluationResult:
    """The evaluate report of the windows the scheduler stored, against the simulator's labels."""
    parts = []
    for cid, part in scored.groupby("compressor_id"):
        truth = telemetry[(telemetry["compressor_id"] == cid) & (telemetry["timestamp"] >= part["window_end"].min())]
        times, labels = truth["timestamp"].to_numpy("datetime64[ns]"), truth["label"].to_numpy() > 0
        at_end = pd.Series(labels, index=times).groupby(level=0).max()
        part = part.sort_values("window_end").reset_index(drop=True)
        part["label"] = at_end.reindex(part["window_end"].to_numpy(), fill_value=False).to_numpy().astype(np.int8)
        part["score_ratio"] = part["score"] / part["threshold"]
        parts.append(CompressorScores(cid, part, times, labels))
    return summarise(parts, settings, bundle, start, end)


def run_demo(settings: Settings, args) -> int:
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    settings = settings.replace(db_url=f"sqlite:///{out / 'demo.sqlite'}", model_dir=out / "models")
    engine, tables = make_engine(settings.db_url), build_tables(settings)

    log.info("demo 1/4: simulating %d compressors x %.0f days", args.compressors, args.days)
    fleet = simulate_fleet(args.compressors, args.days, start=DEMO_START, seed=args.seed, interval_s=settings.data.sampling_interval_s)
    create_all(engine, tables)
    write_telemetry(engine, tables, fleet.telemetry)

    train_end = DEMO_START + timedelta(days=args.train_days)
    log.info("demo 2/4: training on the normal rows before %s", train_end)
    bundle = train_and_publish(engine, tables, settings, DEMO_START, train_end)

    log.info("demo 3/4: scheduler run over the rest of the data")
    report = Runner(settings, engine, bundle).run_once()

    log.info("demo 4/4: report")
    with engine.connect() as conn:
        scored = pd.read_sql(
            sa.select(tables.detailed.c.compressor_id, tables.detailed.c.window_end, tables.detailed.c.score, tables.detailed.c.threshold, tables.detailed.c.is_anomaly, tables.detailed.c.triggered),
            conn,
        )
    scored["window_end"] = pd.to_datetime(scored["window_end"])
    scored[["is_anomaly", "triggered"]] = scored[["is_anomaly", "triggered"]].astype(bool)
    result = stored_report(scored, fleet.telemetry, settings, bundle, train_end, fleet.telemetry["timestamp"].max())
    events = fleet.events[fleet.events["end"] > train_end]
    plot = plot_scores(scored, events, out / "demo_scores.png", f"Demo fleet, model {bundle.version}")
    table = result.metrics.loc[:, list(TABLE_COLUMNS)].round(3)
    (out / "demo_table.txt").write_text(table.to_string() + "\n", encoding="utf-8")
    overall = result.overall
    print()
    print(table.to_string())
    print()
    caught, total = overall["events_detected"], overall["events"]
    delay = f"median delay {overall['median_delay_min']:.1f} min, max {overall['max_delay_min']:.1f} min" if caught else "no delay (nothing caught)"
    print(f"thresholds: {bundle.threshold_rule}; alarm rule: {bundle.alarm.describe()} windows")
    print(f"fault events caught: {caught}/{total} ({100 * caught / max(total, 1):.0f} %), {delay}")
    print(
        f"false-alarm events: {overall['false_alarms']} over {overall['observed_hours'] / 24:.0f} compressor-days "
        f"({overall['false_alarms_per_hour']:.3f} per compressor-hour, {24 * overall['false_alarms_per_hour']:.2f} per compressor-day)"
    )
    print(f"run {report.batch_id}: {sum(o.windows_scored for o in report.outcomes)} windows in {report.duration_s:.1f} s")
    print(f"plot: {plot}")
    print(f"database: {settings.db_url}  (tables {', '.join(t.name for t in tables.result_tables)})")
    return 0 if report.ok else 1
