"""Backfill speed on Dask with 1 and with 2 worker processes: `python benchmarks/scale.py [--db-url URL]`.

In a scratch database on the URL's server (default: the local PostgreSQL; SQLite: a new file next
to the URL's file), dropped afterwards:
1. simulate_fleet writes 20 compressors x 20,000 rows (30 s apart) to the source table;
2. a model is trained briefly (1 epoch on the first 6 hours: full network size, so inference costs
   what it costs in production);
3. for each worker count, a LocalCluster of that many one-thread processes is started, the model is
   loaded on every worker and a short warm-up backfill compiles the inference function there; the
   result tables are emptied, then one backfill over all rows is timed (one Dask task per compressor).

Prints rows/s per worker count and the speed-up; ends with one JSON line:
{"db", "compressors", "rows", "cpu_count", "runs": [{"workers", "seconds", "rows_per_s"}], "speedup"}.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from core.logs import setup_logging  # noqa: E402
from core.settings import Settings, load_settings, with_section  # noqa: E402
from db.engine import make_engine, safe_url  # noqa: E402
from db.schema import build_tables, create_all  # noqa: E402
from db.scratch import scratch_database  # noqa: E402
from db.source import write_telemetry  # noqa: E402
from pipeline.publish import train_and_publish  # noqa: E402
from scheduler.dask_executor import DaskExecutor  # noqa: E402
from simulation.fleet import simulate_fleet  # noqa: E402

log = logging.getLogger("benchmarks.scale")
START = datetime(2026, 1, 1)
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def prepare(settings: Settings, compressors: int, rows: int) -> datetime:
    """Write the fleet, train and promote a model; return the end of the data."""
    interval = settings.data.sampling_interval_s
    fleet = simulate_fleet(compressors, rows * interval / 86_400, start=START, seed=3, interval_s=interval)
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    try:
        create_all(engine, tables)
        started = time.perf_counter()
        write_telemetry(engine, tables, fleet.telemetry)
        log.info("wrote %d rows to %s in %.1f s", len(fleet.telemetry), safe_url(engine.url), time.perf_counter() - started)
        train_end = START + timedelta(hours=6)
        train_and_publish(engine, tables, settings, START, train_end)
    finally:
        engine.dispose()
    return fleet.telemetry["timestamp"].max().to_pydatetime()


def clear_results(settings: Settings) -> None:
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    with engine.begin() as conn:
        for table in (tables.detailed, tables.results, tables.summary):
            conn.execute(sa.delete(table))
    engine.dispose()


def timed_backfill(settings: Settings, workers: int, end: datetime) -> dict:
    with DaskExecutor(settings, f"local:{workers}") as executor:
        started = time.perf_counter()
        executor.prepare()
        warm = executor.backfill(START, START + timedelta(hours=1))
        log.info("%d workers: model loaded and compiled in %.1f s", workers, time.perf_counter() - started)
        clear_results(settings)
        report = executor.backfill(START, end)
    if not warm.ok or not report.ok:
        raise RuntimeError(f"backfill failed for {report.failed or warm.failed}")
    rows = sum(o.rows_read for o in report.outcomes)
    used = len(set(report.workers.values()))
    log.info("%d workers (%d used): %d rows in %.2f s = %.0f rows/s", workers, used, rows, report.duration_s, rows / report.duration_s)
    return {"workers": workers, "workers_used": used, "rows": rows, "seconds": round(report.duration_s, 2), "rows_per_s": round(rows / report.duration_s)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=DEFAULT_URL, help="server (or SQLite file) to benchmark; a scratch database is used")
    parser.add_argument("--compressors", type=int, default=20)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per compressor")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    counts = [int(n) for n in args.workers.split(",")]
    with scratch_database(args.db_url, "bench_scale") as url, tempfile.TemporaryDirectory(prefix="scale-models-") as model_dir:
        settings = load_settings(None, env={}, db_url=url, model_dir=model_dir)
        settings = with_section(settings, "training", epochs=args.epochs, window_stride=5)
        end = prepare(settings, args.compressors, args.rows)
        runs = [timed_backfill(settings, n, end) for n in counts]
        dialect = sa.make_url(url).get_backend_name()
    for run in runs:
        print(f"{run['workers']} worker(s): {run['rows']} rows in {run['seconds']:.2f} s = {run['rows_per_s']} rows/s")
    speedup = round(runs[-1]["rows_per_s"] / runs[0]["rows_per_s"], 2)
    print(f"speed-up {counts[-1]} vs {counts[0]} worker(s): {speedup}x on {os.cpu_count()} CPU cores")
    print(json.dumps({"db": dialect, "compressors": args.compressors, "rows": runs[0]["rows"], "cpu_count": os.cpu_count(), "runs": runs, "speedup": speedup}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
