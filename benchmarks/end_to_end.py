"""End-to-end backfill speed: `python benchmarks/end_to_end.py --db-url URL`.

In a scratch database on the URL's server (SQLite: a new file next to the URL's file), dropped
afterwards:
1. simulate_fleet writes 10 compressors x 100,000 rows (30 s apart) to the source table;
2. a model is trained briefly (default 2 epochs on the first, fault-free day: the network has
   its full size, so inference costs what it costs in production, but its accuracy is not the point);
3. one backfill over everything is timed: read -> validate/window -> infer -> score -> write,
   with the seconds per stage summed over compressors (pipeline.timing.StageTimer; "queued":
   waiting for another compressor's inference to end, pipeline/scoring.py);
4. ~1,250 new rows per compressor are appended and one live run (Runner.run_once with the
   model already loaded) is timed, as an hourly scheduler run would be.

Ends with one JSON line: {"db", "rows", "seconds", "rows_per_s", "stages", "incremental_rows",
"incremental_s"}.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.logs import setup_logging  # noqa: E402
from core.threads import use_single_threaded_kernels  # noqa: E402
from core.settings import load_settings, with_section  # noqa: E402
from db.engine import make_engine, safe_url  # noqa: E402
from db.schema import build_tables, create_all  # noqa: E402
from db.scratch import scratch_database  # noqa: E402
from db.source import write_telemetry  # noqa: E402
from pipeline.batch import BatchOutcome  # noqa: E402
from pipeline.publish import train_and_publish  # noqa: E402
from pipeline.timing import StageTimer  # noqa: E402
from scheduler.executor import RunObserver  # noqa: E402
from scheduler.runner import Runner  # noqa: E402
from simulation.fleet import simulate_fleet  # noqa: E402

log = logging.getLogger("benchmarks.end_to_end")
START = datetime(2026, 1, 1)
TRAIN_DAYS = 1.0  # fault-free, so every compressor has normal rows to train on
STAGES = ("reading", "preprocessing", "queued", "inference", "scoring", "writing")


def run(url: str, compressors: int, rows: int, incremental: int, epochs: int, model_dir: Path, parallel: int) -> dict:
    settings = load_settings(None, env={}, db_url=url, model_dir=str(model_dir))
    settings = with_section(settings, "training", epochs=epochs, window_stride=5)
    settings = with_section(settings, "scheduler", parallel_compressors=parallel)
    interval = settings.data.sampling_interval_s
    days = (rows + incremental) * interval / 86_400
    fleet = simulate_fleet(compressors, days, start=START, seed=3, interval_s=interval, fault_free_days=TRAIN_DAYS)
    telemetry = fleet.telemetry
    cutoff = START + timedelta(seconds=interval * rows)
    base, late = telemetry[telemetry["timestamp"] < cutoff], telemetry[telemetry["timestamp"] >= cutoff]
    engine, tables = make_engine(url), build_tables(settings)
    try:
        create_all(engine, tables)
        started = time.perf_counter()
        write_telemetry(engine, tables, base)
        log.info("source table: %d rows written in %.1f s to %s", len(base), time.perf_counter() - started, safe_url(engine.url))

        train_end = START + timedelta(days=TRAIN_DAYS)
        bundle = train_and_publish(engine, tables, settings, START, train_end, promote_it=False)

        runner = Runner(settings, engine, bundle, long_lived=True)  # the daemon's hourly run, as well as the backfill
        timer = StageTimer()
        outcomes: list[BatchOutcome] = []

        class Collect(RunObserver):
            def on_batch(self, outcome: BatchOutcome) -> None:
                outcomes.append(outcome)
                timer.merge(outcome.timer)

        runner.observers.append(Collect())
        started = time.perf_counter()
        report = runner.backfill(START, cutoff, advance_checkpoint=True)
        seconds = time.perf_counter() - started
        if not report.ok:
            raise RuntimeError(f"backfill failed for {report.failed}")
        rows_read = sum(o.rows_read for o in outcomes)
        stages = {name: round(timer.seconds.get(name, 0.0), 3) for name in STAGES}
        for name, value in stages.items():
            log.info("stage %-13s %8.2f s", name, value)
        log.info("backfill: %d rows, %d windows in %.2f s (%.0f rows/s)", rows_read, sum(o.windows_scored for o in outcomes), seconds, rows_read / seconds)

        write_telemetry(engine, tables, late)
        outcomes.clear()
        timer = StageTimer()
        started = time.perf_counter()
        live = runner.run_once()
        incremental_s = time.perf_counter() - started
        if not live.ok:
            raise RuntimeError(f"live run failed for {live.failed}")
        new_rows = sum(o.rows_read for o in outcomes)
        live_stages = " ".join(f"{name}={timer.seconds.get(name, 0.0):.2f}s" for name in STAGES)
        log.info("hourly incremental run: %d new rows (%d per compressor) in %.2f s (%s)", new_rows, incremental, incremental_s, live_stages)
        return {
            "db": "mariadb" if getattr(engine.dialect, "is_mariadb", False) else engine.dialect.name,
            "rows": rows_read,
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows_read / seconds),
            "stages": stages,
            "incremental_rows": new_rows,
            "incremental_s": round(incremental_s, 3),
        }
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True, help="server (or SQLite file) to benchmark; a scratch database is used")
    parser.add_argument("--compressors", type=int, default=10)
    parser.add_argument("--rows", type=int, default=100_000, help="source rows per compressor")
    parser.add_argument("--incremental-rows", type=int, default=1_250, help="new rows per compressor for the live run")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (tiny training: speed is measured, not accuracy)")
    parser.add_argument("--parallel-compressors", type=int, default=0, help="scheduler.parallel_compressors (0 = automatic)")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    use_single_threaded_kernels()  # as the `backfill` and `run` commands do
    with scratch_database(args.db_url, "bench") as url, tempfile.TemporaryDirectory(prefix="bench-models-") as model_dir:
        result = run(url, args.compressors, args.rows, args.incremental_rows, args.epochs, Path(model_dir), args.parallel_compressors)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
