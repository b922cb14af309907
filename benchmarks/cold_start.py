"""What a cron run costs: `python benchmarks/cold_start.py [--compressors 10] [--repeats 2] [--checkout DIR ...]`.

In a temporary folder (SQLite database, model directory, settings file), removed afterwards:
1. simulate_fleet writes `--compressors` x 6 fault-free hours (30 s apart) to the source table;
2. this checkout's `run_scheduler.py train` fits a tiny model (1 epoch: the network has its full
   size, so scoring costs what it costs in production) and promotes it, which also warms the
   compilation cache;
3. each timed case is a new `run_scheduler.py run --once` process, as cron or Task Scheduler
   starts it, timed from spawn to exit, with its CPU seconds (user + system: steadier than wall
   time on a shared machine) and peak RSS (wait4):
   - `hour_cold`: one new hour of rows per compressor, the compilation cache removed first;
   - `no_work`: nothing new since the run before;
   - `hour_warm`: the next hour, the cache as the runs before left it.
   The cases repeat `--repeats` times, each on a new hour.

`--checkout DIR` (repeatable; default: this checkout) times that checkout's run_scheduler.py on
the same fleet and model, for a before/after comparison: each checkout gets its own copy of the
database and the model directory, and the cases run interleaved, checkout after checkout, so
that the machine's load falls on all of them alike. Ends with one JSON line per checkout:
{"checkout", "compressors", "rows_per_hour", "train_s", "<case>_s": [...], "<case>_cpu_s": [...],
"<case>_rss_mb": [...], "load_avg_1min": [at start, at end]}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.settings import load_settings  # noqa: E402
from db.engine import make_engine  # noqa: E402
from db.schema import build_tables, create_all  # noqa: E402
from db.source import write_telemetry  # noqa: E402
from models.compile_cache import CACHE_DIR_NAME  # noqa: E402
from simulation.fleet import simulate_fleet  # noqa: E402

START = datetime(2026, 1, 1)
TRAIN_HOURS = 6
CASES = ("hour_cold", "no_work", "hour_warm")


def timed(script: Path, args: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS in MiB, last log line) of one run_scheduler.py process."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(args)} exited {process.returncode}:\n{output}")
    lines = [line for line in output.splitlines() if line.strip()]
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compressors", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkout", type=Path, action="append", help="time the run_scheduler.py of this checkout (repeatable; default: this checkout)")
    args = parser.parse_args(argv)
    checkouts = [c.resolve() for c in args.checkout or [ROOT]]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cold-start-") as folder:
        folder = Path(folder)
        config_text = 'model_dir = "models"\n[database]\nurl = "sqlite:///fleet.sqlite"\n[training]\nepochs = 1\nwindow_stride = 10\n'
        (folder / "bench.toml").write_text(config_text, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_AD_")}
        settings = load_settings(str(folder / "bench.toml"), env={})
        interval = settings.data.sampling_interval_s
        hours = TRAIN_HOURS + 2 * args.repeats
        fleet = simulate_fleet(args.compressors, hours / 24, start=START, seed=3, interval_s=interval, fault_free_days=hours / 24)
        telemetry = fleet.telemetry
        engine, tables = make_engine(settings.db_url), build_tables(settings)
        create_all(engine, tables)
        write_telemetry(engine, tables, telemetry[telemetry["timestamp"] < START + timedelta(hours=TRAIN_HOURS)])
        engine.dispose()
        train_end = START + timedelta(hours=TRAIN_HOURS)
        common = ["--config", str(folder / "bench.toml"), "--log-level", "INFO"]
        train_s, _, train_rss, _ = timed(ROOT / "run_scheduler.py", [*common, "train", "--start", START.isoformat(), "--end", train_end.isoformat()], env)
        print(f"train: {train_s:.1f} s, peak {train_rss:.0f} MiB")

        runs = []  # per checkout: its folder, settings, engine and results
        for i, checkout in enumerate(checkouts):
            place = folder / f"checkout-{i}"
            place.mkdir()
            shutil.copy(folder / "fleet.sqlite", place / "fleet.sqlite")
            shutil.copytree(settings.model_dir, place / "models")
            (place / "bench.toml").write_text(config_text, encoding="utf-8")
            own = load_settings(str(place / "bench.toml"), env={})
            results: dict[str, list[float]] = {f"{case}_{unit}": [] for case in CASES for unit in ("s", "cpu_s", "rss_mb")}
            runs.append((checkout, place, own, make_engine(own.db_url), results))

        hour, windows = TRAIN_HOURS, 0
        for _ in range(args.repeats):
            for case in CASES:
                low, high = START + timedelta(hours=hour), START + timedelta(hours=hour + 1)
                for checkout, place, own, own_engine, results in runs:
                    if case.startswith("hour"):
                        windows = write_telemetry(own_engine, tables, telemetry[(telemetry["timestamp"] >= low) & (telemetry["timestamp"] < high)])
                    if case == "hour_cold":
                        shutil.rmtree(own.model_dir / CACHE_DIR_NAME, ignore_errors=True)
                    wall, cpu, rss, last = timed(checkout / "run_scheduler.py", ["--config", str(place / "bench.toml"), "--log-level", "INFO", "run", "--once"], env)
                    results[f"{case}_s"].append(round(wall, 2))
                    results[f"{case}_cpu_s"].append(round(cpu, 2))
                    results[f"{case}_rss_mb"].append(round(rss, 1))
                    print(f"{case:<10} {wall:6.2f} s wall  {cpu:6.2f} s CPU  peak {rss:6.0f} MiB  {checkout.name:<12} | {last[-100:]}")
                if case.startswith("hour"):
                    hour += 1
        load_after = os.getloadavg()[0]
        for checkout, _, _, own_engine, results in runs:
            own_engine.dispose()
            summary = {
                "checkout": str(checkout), "compressors": args.compressors, "rows_per_hour": windows, "train_s": round(train_s, 1),
                **results, "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
            }
            print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
