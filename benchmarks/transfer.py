"""Detection on data the model has never seen: `python benchmarks/transfer.py [--case sim|skab|both]`.

Each case trains on one period, calibrates as the product does (held-out windows of that
period), and scores a later, separately generated one:

- ``sim``: a simulated fleet. Training: days 1-3 of one realisation (`--train-days`). Scored: a
  week (`--test-days`) that starts `--weeks-later` weeks after training ends, generated with
  another realisation seed (new load, noise and faults), the units aged by that time, and
  operator set-points over a wider range (new operating points). Rows labelled 0 are normal.
  Two variants: ``as_trained`` (the model as `train` saved it) and ``after_calibrate`` (the
  model recalibrated by `calibrate` on the first `--calibrate-days` of the later period's
  normal rows, then scoring the rest), the commissioning step the README recommends.
- ``skab``: SKAB with the product's defaults and only the data layout configured
  (benchmarks/skab.py --defaults): per file, fit on its first 400 rows, score the rest.

With `--grid`, the sim case also scores other threshold and alarm rules on the same trained
network (each calibrated as `train` would, on the same held-out windows): the evidence for the
defaults.

Per case and variant it prints the fraction of unseen normal windows flagged (against the target
false-alarm rate), event recall, false alarms per hour per compressor, median and max delay, and
one JSON line per variant; the last line is the JSON of every variant. For the sim case it also
prints how soon the faults could be seen at all (simulation.fleet's `detectable_from`: the first
sample a fault has moved a signal by 2 residual SDs; the faults grow gradually) and the median
delay counted from then.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.logs import setup_logging  # noqa: E402
from core.settings import load_settings, with_section  # noqa: E402
from db.engine import make_engine  # noqa: E402
from db.schema import build_tables, create_all  # noqa: E402
from db.source import write_telemetry  # noqa: E402
from evaluation.evaluate import evaluate_range  # noqa: E402
from models.alarms import rule_from_settings  # noqa: E402
from models.calibration import split_normal  # noqa: E402
from models.training import recalibrate_bundle  # noqa: E402
from pipeline.publish import train_from_source  # noqa: E402
from pipeline.training_data import load_normal_windows  # noqa: E402
from simulation.fleet import DETECTABLE_SD, simulate_fleet  # noqa: E402

log = logging.getLogger("transfer")
START = datetime(2026, 1, 1)
# [detection] changes scored with --grid besides the defaults: target rates x alarm rules, and the seed's rule
_RATES = {"rate 0.5 %": {"false_alarm_rate": 0.005}, "rate 2 %": {"false_alarm_rate": 0.02}}
_RULES = {
    "10 of 20": {"alarm_rule": "k_of_n", "alarm_n": 20, "alarm_k": 10},
    "5 of 10": {"alarm_rule": "k_of_n", "alarm_n": 10, "alarm_k": 5},
    "20 of 40": {"alarm_rule": "k_of_n", "alarm_n": 40, "alarm_k": 20},
    "40 of 60": {"alarm_rule": "k_of_n", "alarm_n": 60, "alarm_k": 40},
    "cusum h=5": {"alarm_rule": "cusum", "cusum_h": 5.0},
    "60 in a row": {"alarm_rule": "consecutive", "consecutive_trigger": 60},
}
GRID = {
    **{f"{r}, {a}": {**rate, **rule} for r, rate in _RATES.items() for a, rule in _RULES.items()},
    "mean_std k=2, 60 in a row": {"threshold_rule": "mean_std", "alarm_rule": "consecutive", "consecutive_trigger": 60},
}


def _onset_figures(events: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """How soon the scored faults could be seen at all: the median minutes from a fault's start until it
    has moved some signal by DETECTABLE_SD residual SDs (the simulator's `detectable_from`), and the
    median delay of the detected faults counted from that moment instead of from the start."""
    joined = events.merge(truth[["compressor_id", "start", "detectable_from"]], on=["compressor_id", "start"], how="left")
    to_detectable = (joined["detectable_from"] - joined["start"]).dt.total_seconds() / 60
    detected = joined[joined["detected"]]
    after = (detected["first_alert"] - detected["detectable_from"]).dt.total_seconds() / 60
    return {
        "median_min_to_detectable": round(float(to_detectable.median()), 2) if to_detectable.notna().any() else None,
        "median_delay_after_detectable_min": round(float(after.median()), 2) if after.notna().any() else None,
    }


def _row(case: str, variant: str, result, target: float | None, margin: timedelta, truth: pd.DataFrame) -> dict:
    """The figures of one scored period; 'unseen normal' windows are labelled 0 and at least
    `margin` away from every labelled event (a fault's lead-in and tail are not normal data).
    `truth` is the simulator's event list of the scored period."""
    frame, events = result.frame, result.events
    normal = frame["label"].to_numpy() == 0
    for cid, start, end in events[["compressor_id", "start", "end"]].itertuples(index=False):
        near = (frame["compressor_id"] == cid) & (frame["window_end"] >= start - margin) & (frame["window_end"] <= end + margin)
        normal &= ~near.to_numpy()
    overall = result.overall
    rounded = lambda x: None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)  # noqa: E731
    return {
        "case": case,
        "variant": variant,
        "threshold_rule": result.threshold_rule,
        "alarm_rule": result.alarm_rule,
        "target_rate": target,
        "normal_windows": int(normal.sum()),
        "normal_flagged_fraction": rounded(frame.loc[normal, "is_anomaly"].mean()),
        "events": int(overall["events"]),
        "event_recall": rounded(overall["event_recall"]),
        "false_alarms": int(overall["false_alarms"]),
        "false_alarms_per_hour": rounded(overall["false_alarms_per_hour"]),
        "median_delay_min": rounded(overall["median_delay_min"]),
        "max_delay_min": rounded(overall["max_delay_min"]),
        "auroc": rounded(overall["auroc"]),
        **_onset_figures(events, truth),
    }


def sim_case(args: argparse.Namespace, work: Path) -> list[dict]:
    settings = load_settings(None, env={}, db_url=f"sqlite:///{work / 'transfer.sqlite'}", model_dir=str(work / "models"))
    if args.epochs:
        settings = with_section(settings, "training", epochs=args.epochs)
    if args.window:
        settings = with_section(settings, "data", window=args.window)
    train_end = START + timedelta(days=args.train_days)
    test_start = train_end + timedelta(weeks=args.weeks_later)
    test_end = test_start + timedelta(days=args.test_days)
    trained_on = simulate_fleet(args.compressors, args.train_days, start=START, seed=args.seed, realisation_seed=1)
    later = simulate_fleet(
        args.compressors, args.test_days, start=test_start, seed=args.seed, realisation_seed=2,
        age_days=(test_start - START).days, load_range=(0.5, 1.0),
    )
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    create_all(engine, tables)
    for fleet in (trained_on, later):
        write_telemetry(engine, tables, fleet.telemetry)
    log.info("sim: %d compressors, trained on %s .. %s, scoring %s .. %s (%d labelled events)", args.compressors, START, train_end, test_start, test_end, len(later.events))
    started = time.perf_counter()
    bundle = train_from_source(engine, tables, settings, START, train_end)
    log.info("sim: trained in %.1f s", time.perf_counter() - started)
    commissioning_end = test_start + timedelta(days=args.calibrate_days)
    commissioning = load_normal_windows(engine, tables, settings, test_start, commissioning_end)
    train_sets = load_normal_windows(engine, tables, settings, START, train_end)
    held_out = {c: split_normal(ws, settings.training.calibration_fraction, settings.data.window).calibration for c, ws in train_sets.items()}
    rows = []
    for name, changes in [("defaults", {}), *(GRID.items() if args.grid else [])]:
        variant = with_section(settings, "detection", **changes)
        det = variant.detection
        target = det.false_alarm_rate if det.threshold_rule == "false_alarm_rate" else None
        margin = timedelta(seconds=variant.data.window * variant.data.sampling_interval_s)
        # as `train` would calibrate this variant: the same held-out windows of the training period
        trained = dataclasses.replace(recalibrate_bundle(bundle, held_out, variant, (START.isoformat(), train_end.isoformat())), alarm=rule_from_settings(det))
        result = evaluate_range(engine, tables, variant, trained, test_start, test_end)
        rows.append({"grid": name, **_row("sim", "as_trained", result, target, margin, later.events)})
        recalibrated = recalibrate_bundle(trained, commissioning, variant, (test_start.isoformat(), commissioning_end.isoformat()))
        rest = evaluate_range(engine, tables, variant, recalibrated, commissioning_end + timedelta(seconds=1), test_end)
        rows.append({"grid": name, **_row("sim", "after_calibrate", rest, target, margin, later.events)})
        log.info("sim [%s]: %s | %s", name, _brief(rows[-2]), _brief(rows[-1]))
    engine.dispose()
    return rows


def _brief(row: dict) -> str:
    return (
        f"{row['variant']}: flagged {row['normal_flagged_fraction']} (target {row['target_rate']}), recall {row['event_recall']}, "
        f"FA/h {row['false_alarms_per_hour']}, median delay {row['median_delay_min']} min "
        f"({row['median_delay_after_detectable_min']} min after the fault is {DETECTABLE_SD:g} SD; {row['median_min_to_detectable']} min to get there)"
    )


def skab_case(args: argparse.Namespace) -> list[dict]:
    """benchmarks/skab.py --defaults in a subprocess; its last line is the JSON of the result."""
    command = [sys.executable, str(Path(__file__).with_name("skab.py")), "--defaults", "--detector", "lstm_ae"]
    if args.window:
        command += ["--window", str(args.window)]
    if args.skab_data:
        command += ["--data", str(args.skab_data)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"skab.py --defaults failed: {done.stderr.strip().splitlines()[-1:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    print("\n".join(done.stdout.splitlines()[-12:]))
    result = json.loads(lines[0])
    return [{"case": "skab", "variant": "defaults", **{k: result[k] for k in ("f1", "far", "mar", "threshold_rule", "alarm_rule", "window", "score")}}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("sim", "skab", "both"), default="sim")
    parser.add_argument("--compressors", type=int, default=5)
    parser.add_argument("--train-days", type=float, default=3.0)
    parser.add_argument("--test-days", type=float, default=7.0)
    parser.add_argument("--weeks-later", type=int, default=3)
    parser.add_argument("--calibrate-days", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, help="training epochs (default: the product's)")
    parser.add_argument("--window", type=int, help="[data] window in samples (default: the product's), for both cases")
    parser.add_argument("--grid", action="store_true", help="also score the GRID of threshold and alarm rules on the same network")
    parser.add_argument("--skab-data", type=Path, help="SKAB directory (default: $SKAB_DATA or ../shared/datasets/skab)")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    for name in ("models", "pipeline", "scheduler", "db", "evaluation"):
        logging.getLogger(name).setLevel(logging.WARNING if name == "models" else logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory(prefix="transfer-") as work:
        if args.case in ("sim", "both"):
            rows += sim_case(args, Path(work))
        if args.case in ("skab", "both"):
            rows += skab_case(args)
    for row in rows:
        print(json.dumps(row))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
