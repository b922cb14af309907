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
from evaluation.metrics import event_report
from evaluation.plots import plot_scores
from pipeline.publish import train_and_publish
from scheduler.runner import Runner
from simulation.fleet import simulate_fleet

log = logging.getLogger(__name__)
DEMO_START = datetime(2026, 1, 1)


def demo_table(scored: pd.DataFrame, telemetry: pd.DataFrame, settings: Settings, tolerance_s: float) -> tuple[pd.DataFrame, list[float]]:
    """Per compressor: windows, anomaly points, alerts, fault events caught, false-alarm events;
    and the delay of every caught event (minutes)."""
    rows, delays = [], []
    for cid, part in scored.groupby("compressor_id"):
        truth = telemetry[(telemetry["compressor_id"] == cid) & (telemetry["timestamp"] >= part["window_end"].min())]
        alerts = part.loc[part["triggered"], "window_end"].to_numpy()
        report = event_report(
            truth["timestamp"].to_numpy(), truth["label"].to_numpy(), alerts,
            interval_s=settings.data.sampling_interval_s, tolerance_s=tolerance_s,
        )
        delays += [e["delay_min"] for e in report["events"] if e["detected"]]
        days = len(part) * settings.data.sampling_interval_s / 86_400
        rows.append(
            {
                "compressor": cid,
                "windows": len(part),
                "anomaly_points": int(part["is_anomaly"].sum()),
                "alerts": len(alerts),
                "fault_events": report["n_events"],
                "caught": report["n_detected"],
                "false_alarms": report["false_alarms"],
                "false_alarms_per_day": round(report["false_alarms"] / days, 2) if days else 0.0,
                "median_delay_min": report["median_delay_min"],
            }
        )
    return pd.DataFrame(rows), delays


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
    tolerance_s = settings.data.window * settings.data.sampling_interval_s
    table, delays = demo_table(scored, fleet.telemetry, settings, tolerance_s)
    events = fleet.events[fleet.events["end"] > train_end]
    plot = plot_scores(scored, events, out / "demo_scores.png", f"Demo fleet, model {bundle.version}")
    caught, total = int(table["caught"].sum()), int(table["fault_events"].sum())
    compressor_days = len(table) * (args.days - args.train_days)
    false_alarms = int(table["false_alarms"].sum())
    (out / "demo_table.txt").write_text(table.to_string(index=False) + "\n", encoding="utf-8")
    print()
    print(table.to_string(index=False))
    print()
    delay = f"median delay {np.median(delays):.1f} min, max {max(delays):.1f} min" if delays else "no delay (nothing caught)"
    print(f"thresholds: {bundle.threshold_rule}; alarm rule: {bundle.alarm.describe()} windows")
    print(f"fault events caught: {caught}/{total} ({100 * caught / max(total, 1):.0f} %), {delay}")
    print(f"false-alarm events: {false_alarms} over {compressor_days:.0f} compressor-days ({false_alarms / max(compressor_days, 1e-9):.2f} per compressor-day)")
    print(f"run {report.batch_id}: {sum(o.windows_scored for o in report.outcomes)} windows in {report.duration_s:.1f} s")
    print(f"plot: {plot}")
    print(f"database: {settings.db_url}  (tables {', '.join(t.name for t in tables.result_tables)})")
    return 0 if report.ok else 1
