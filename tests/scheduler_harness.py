"""Shared by the exactly-once tests: a small trained fleet, the scheduler command line as a subprocess,
and snapshots of the result tables to compare two databases with.

The model (3 compressors, 10-step windows, two epochs) is trained once per test session; short
windows keep each scheduler process's start (TensorFlow import, model load, first trace) short.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.clock import utcnow
from core.settings import Settings, load_settings
from db.engine import make_engine
from db.schema import Tables, build_tables, create_all
from db.source import write_telemetry
from models.artifacts import ModelBundle
from pipeline.publish import publish, train_from_source
from scheduler.runner import Runner
from simulation.fleet import simulate_fleet
from tolerances import SCORE_RTOL

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 1, 1)
TRAIN_END = START + timedelta(hours=14)
INTERVAL = timedelta(seconds=30)
CONFIG = """
[data]
window = 10
lateness_allowance_s = 1800.0

[detection]
# a threshold at 5 % of held-out windows and short episodes, so a few hours hold anomaly runs,
# episodes and quiet periods for the batch-boundary tests to cut through
false_alarm_rate = 0.05
alarm_n = 6
alarm_k = 3
quiet_windows = 4

[training]
epochs = 2
batch_size = 128
patience = 1
window_stride = 3

[scheduler]
lease_seconds = 2.0
retry_attempts = 4
retry_base_delay_s = 0.2
"""
# Columns that differ between any two runs: surrogate keys, batch ids, wall-clock times, lease holders.
VOLATILE = {"id", "batch_id", "created_at", "started_at", "finished_at", "duration_s", "updated_at", "lease_owner", "lease_expires_at", "next_attempt_at", "sent_at", "claimed_until"}
KEYS = {
    "lstm_predictions_detailed": ["compressor_id", "window_end", "model_version"],
    "anomaly_detection_results": ["compressor_id", "timestamp", "model_version"],
    "lstm_batch_summary": ["compressor_id", "mode", "range_start", "range_end", "status"],
    "lstm_scheduler_checkpoint": ["compressor_id"],
    "lstm_source_day_counts": ["compressor_id", "day_start"],
    "alert_episodes": ["compressor_id", "model_version", "start_time"],
    "maintenance_windows": ["compressor_id", "starts_at", "ends_at"],
    "alert_notifications": ["idempotency_key", "channel"],
}


def write_config(path: Path, **sections: dict) -> Path:
    """A settings file: CONFIG with the given sections' values replaced, e.g. scheduler={"lease_seconds": 60.0}."""
    merged = tomllib.loads(CONFIG)
    for section, values in sections.items():
        merged.setdefault(section, {}).update(values)
    lines = [line for section, values in merged.items() for line in (f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items()))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Fleet:
    """The trained model and the simulated telemetry it was trained on (and is scored on)."""

    model_dir: Path
    bundle: ModelBundle
    telemetry: pd.DataFrame

    def settings(self, url: str, config: Path) -> Settings:
        return load_settings(config, env={}, db_url=url, model_dir=str(self.model_dir))

    def live(self, hours: float, compressors: tuple[str, ...] | None = None) -> pd.DataFrame:
        """Telemetry of the first `hours` hours after the training range."""
        t = self.telemetry
        keep = (t["timestamp"] > TRAIN_END) & (t["timestamp"] <= TRAIN_END + timedelta(hours=hours))
        if compressors:
            keep &= t["compressor_id"].isin(compressors)
        return t.loc[keep].reset_index(drop=True)


_FLEET: dict[str, Fleet] = {}


def trained_small_fleet(folder: Path) -> Fleet:
    """Simulate 3 compressors for 20 h and train on the first 14 h (once per process)."""
    if "fleet" not in _FLEET:
        folder.mkdir(parents=True, exist_ok=True)
        telemetry = simulate_fleet(3, 20 / 24, start=START, seed=5).telemetry
        settings = load_settings(write_config(folder / "train.toml"), env={}, db_url=f"sqlite:///{folder / 'train.sqlite'}")
        engine, tables = prepared(settings.db_url, settings)
        write_telemetry(engine, tables, telemetry[telemetry["timestamp"] <= TRAIN_END])
        bundle = train_from_source(engine, tables, settings, START, TRAIN_END)
        engine.dispose()
        publish(bundle, folder / "models")
        _FLEET["fleet"] = Fleet(folder / "models", bundle, telemetry)
    return _FLEET["fleet"]


# ----------------------------------------------------------------------------- databases
def prepared(url: str, settings: Settings) -> tuple[sa.Engine, Tables]:
    engine, tables = make_engine(url), build_tables(settings)
    create_all(engine, tables)
    return engine, tables


def append(engine: sa.Engine, tables: Tables, frame: pd.DataFrame) -> None:
    write_telemetry(engine, tables, frame)


def run_live(settings: Settings, engine: sa.Engine, bundle: ModelBundle):
    """One failure-free live run in this process."""
    report = Runner(settings, engine, bundle).run_once()
    assert report.ok, report.failed
    return report


def _normal(frame: pd.DataFrame) -> pd.DataFrame:
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object and values.map(lambda v: isinstance(v, (bool, np.bool_))).any():
            frame[column] = values.astype(bool)
        elif column in ("window_end", "timestamp", "range_start", "range_end", "last_timestamp", "day_start", "counted_through"):
            frame[column] = pd.to_datetime(values)
        elif not pd.api.types.is_numeric_dtype(values):
            frame[column] = values.astype(object).where(values.notna(), None)
    return frame


def snapshot(engine: sa.Engine, tables: Tables) -> dict[str, pd.DataFrame]:
    """Every result table without its volatile columns, sorted by its natural key."""
    out = {}
    with engine.connect() as conn:
        for table in tables.result_tables:
            rows = conn.execute(sa.select(table)).mappings().all()
            frame = pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in table.columns])
            frame = _normal(frame.drop(columns=[c for c in frame.columns if c in VOLATILE]))
            out[table.name] = frame.sort_values(KEYS[table.name], kind="stable").reset_index(drop=True)
    return out


def _numeric_alarm_state(frame: pd.DataFrame) -> pd.DataFrame:
    """alarm_state ("run:recent flags in hex:cusum:open:quiet", models/alarms.py) split in two: the
    counts and flags as text (compared exactly) and the CUSUM statistic as a float (to rounding)."""
    if "alarm_state" not in frame.columns or frame["alarm_state"].isna().all():
        return frame
    fields = frame["alarm_state"].str.split(":", expand=True)
    split = pd.DataFrame({"alarm_counts": fields.drop(columns=2).astype(str).agg(":".join, axis=1), "alarm_cusum": fields[2].astype(float)}, index=frame.index)
    return pd.concat([frame.drop(columns="alarm_state"), split], axis=1)


def assert_same_tables(got: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame]) -> None:
    """The same rows in every result table: counts, flags and keys exact, floats to 1e-5 relative.

    The same model on the same rows, but a window's score is the same whichever inference path
    or batch scored it only to float32 round-off (models/inference.py): a live run scores an hour
    in NumPy, a backfill or a differently batched run may score the same window otherwise.
    The CUSUM statistic inside alarm_state sums steps of score / threshold - 1, each carrying that
    round-off: it is compared to 1e-5 absolute (a statistic near 0 has no relative precision).
    """
    assert got.keys() == expected.keys()
    for name in expected:
        assert len(got[name]) == len(expected[name]), f"{name}: {len(got[name])} rows, expected {len(expected[name])}"
        left, right = _numeric_alarm_state(got[name]), _numeric_alarm_state(expected[name])
        if "alarm_cusum" in left.columns:
            np.testing.assert_allclose(left.pop("alarm_cusum"), right.pop("alarm_cusum"), rtol=0, atol=1e-5, err_msg=f"{name}: CUSUM statistic")
        pd.testing.assert_frame_equal(left, right, check_dtype=False, check_exact=False, rtol=SCORE_RTOL, atol=1e-7, obj=name)


def leases_held(engine: sa.Engine, tables: Tables) -> list[tuple[str, datetime]]:
    table = tables.checkpoint
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table.c.lease_owner, table.c.lease_expires_at).where(table.c.lease_owner.is_not(None)))]


def wait_for_leases_to_expire(engine: sa.Engine, tables: Tables) -> None:
    """Sleep until every lease left by a killed scheduler has run out."""
    held = leases_held(engine, tables)
    if held:
        time.sleep(max(0.0, (max(expires for _, expires in held) - utcnow()).total_seconds()) + 0.05)


# ----------------------------------------------------------------------------- subprocesses
def scheduler_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COMPRESSOR_AD_CRASH_AT"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


@dataclass
class Scheduler:
    """`python run_scheduler.py --config ... --db-url ... --model-dir ...` for one database."""

    config: Path
    url: str
    model_dir: Path
    logs: Path

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, str(ROOT / "run_scheduler.py"), "--config", str(self.config), "--db-url", self.url, "--model-dir", str(self.model_dir), *args]

    def start(self, *args: str, crash_at: str | None = None, name: str = "run") -> tuple[subprocess.Popen, Path]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}-{time.monotonic_ns()}.log"
        env = scheduler_env({"COMPRESSOR_AD_CRASH_AT": crash_at} if crash_at else None)
        with log.open("w") as handle:
            process = subprocess.Popen(self.argv(*args), cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        return process, log

    def run(self, *args: str, crash_at: str | None = None, timeout: float = 300) -> tuple[int, str]:
        process, log = self.start(*args, crash_at=crash_at)
        try:
            code = process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
        return code, log.read_text()


def wait_for_line(process: subprocess.Popen, log: Path, text: str, timeout: float = 180) -> bool:
    """True once `text` appears in the log; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return True
        if process.poll() is not None:
            return text in log.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{text!r} did not appear in {log} within {timeout} s")


def killed(code: int) -> bool:
    return code == -signal.SIGKILL
