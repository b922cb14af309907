"""Daemon metrics: the real `run --interval --metrics-port` process scraped over HTTP, and a Runner
observed in-process (counters equal to what the run wrote to the database)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from db.engine import make_engine
from scheduler.metrics import DaemonMetrics
from scheduler.runner import Runner
from ports import free_port

ROOT = Path(__file__).resolve().parents[1]


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def scrape_until_a_run_succeeded(port: int, proc: subprocess.Popen, seconds: float) -> list:
    """The daemon's samples once it reports a successful run (the last scrape when it exits or time runs out)."""
    found: list = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            found = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            if (value(found, "compressor_ad_runs_succeeded_total") or 0) >= 1:
                break
        time.sleep(0.5)
    return found


def value(found: list, name: str, **labels) -> float | None:
    for sample in found:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def copy_fleet(trained_fleet, tmp_path: Path):
    """A private copy of the fleet's SQLite database (the daemon writes results) on the shared model."""
    target = tmp_path / "fleet.sqlite"
    source_path = sa.make_url(trained_fleet["settings"].db_url).database
    with contextlib.closing(sqlite3.connect(source_path)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return trained_fleet["settings"].replace(db_url=f"sqlite:///{target}")


def windows_in_db(settings) -> dict[str, int]:
    engine = make_engine(settings.db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT compressor_id, COUNT(*) FROM lstm_predictions_detailed GROUP BY compressor_id")).all()
    engine.dispose()
    return {cid: count for cid, count in rows}


def test_daemon_serves_metrics_and_stops_on_sigterm(trained_fleet, tmp_path):
    settings = copy_fleet(trained_fleet, tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_AD_")}
    log_path = tmp_path / "daemon.log"
    command = [
        sys.executable, "run_scheduler.py", "--db-url", settings.db_url, "--model-dir", str(settings.model_dir),
        "run", "--interval", "60", "--metrics-port", str(port),
    ]
    started = time.time()
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        found = scrape_until_a_run_succeeded(port, proc, 300)
        assert proc.poll() is None, log_path.read_text(errors="replace")[-2000:]
        assert value(found, "compressor_ad_runs_succeeded_total") >= 1, log_path.read_text(errors="replace")[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    assert code == 0, log_path.read_text(errors="replace")[-2000:]

    bundle, tel = trained_fleet["bundle"], trained_fleet["fleet"].telemetry
    written = windows_in_db(settings)
    assert set(written) == set(bundle.compressors)
    assert value(found, "compressor_ad_runs_started_total") >= 1
    assert value(found, "compressor_ad_runs_failed_total") == 0
    assert value(found, "compressor_ad_run_duration_seconds_count") >= 1
    assert started <= value(found, "compressor_ad_last_success_timestamp_seconds") <= time.time()
    assert value(found, "compressor_ad_model_info", version=bundle.version, detector="lstm_ae") == 1
    for cid, count in written.items():
        assert count > 0
        assert value(found, "compressor_ad_windows_scored_total", compressor_id=cid) == count
        new_rows = int(((tel["compressor_id"] == cid) & (tel["timestamp"] > trained_fleet["train_end"])).sum())
        assert value(found, "compressor_ad_rows_read_total", compressor_id=cid) == new_rows
        assert value(found, "compressor_ad_batches_total", compressor_id=cid, status="ok") == 1
        assert value(found, "compressor_ad_checkpoint_lag_seconds", compressor_id=cid) == 0  # everything read was scored
        assert value(found, "compressor_ad_checkpoint_age_seconds", compressor_id=cid) > 0


def test_observed_runner_counts_what_it_wrote(trained_fleet, tmp_path):
    settings = copy_fleet(trained_fleet, tmp_path)
    engine = make_engine(settings.db_url)
    runner = Runner(settings, engine, trained_fleet["bundle"])
    metrics = DaemonMetrics()
    runner.observers.append(metrics)

    report = runner.run_once()
    second = runner.run_once()

    found = samples_of(metrics)
    assert report.ok and second.ok
    assert value(found, "compressor_ad_runs_started_total") == 2
    assert value(found, "compressor_ad_runs_succeeded_total") == 2
    assert value(found, "compressor_ad_run_duration_seconds_count") == 2
    for outcome in report.outcomes:
        cid = outcome.compressor_id
        assert value(found, "compressor_ad_windows_scored_total", compressor_id=cid) == outcome.windows_scored
        assert value(found, "compressor_ad_anomaly_points_total", compressor_id=cid) == outcome.anomaly_points
        assert value(found, "compressor_ad_alerts_triggered_total", compressor_id=cid) == outcome.triggered_events
        assert value(found, "compressor_ad_batches_total", compressor_id=cid, status="no_new_data") == 1  # the second run
    assert windows_in_db(settings) == {o.compressor_id: o.windows_scored for o in report.outcomes}

    # New rows arrive for C01 only: its lag is their span until the next run scores them.
    tel = trained_fleet["fleet"].telemetry
    checkpoint = max(tel.loc[tel["compressor_id"] == "C01", "timestamp"])
    with engine.begin() as conn:
        conn.execute(runner.tables.source.insert(), [
            {"timestamp": (checkpoint + pd.Timedelta(seconds=30 * i)).to_pydatetime(), "compressor_id": "C01", **{f: 1.0 for f in settings.data.features}}
            for i in (1, 2, 3, 4)
        ])
    metrics.observe_checkpoints(engine, runner.tables, settings)
    assert value(samples_of(metrics), "compressor_ad_checkpoint_lag_seconds", compressor_id="C01") == 120
    assert value(samples_of(metrics), "compressor_ad_checkpoint_lag_seconds", compressor_id="C02") == 0
    engine.dispose()


def test_failed_runs_are_counted(trained_fleet, tmp_path):
    settings = copy_fleet(trained_fleet, tmp_path).replace(model_dir=tmp_path / "no-models")
    runner = Runner(settings, make_engine(settings.db_url))
    metrics = DaemonMetrics()
    runner.observers.append(metrics)
    with pytest.raises(Exception, match="no model promoted"):
        runner.run_once()
    found = samples_of(metrics)
    assert value(found, "compressor_ad_runs_started_total") == 1
    assert value(found, "compressor_ad_runs_failed_total") == 1
    assert value(found, "compressor_ad_runs_succeeded_total") == 0
    assert value(found, "compressor_ad_last_success_timestamp_seconds") == 0


def test_metrics_port_needs_interval_and_a_free_port(trained_fleet, tmp_path):
    base = [sys.executable, "run_scheduler.py", "--db-url", f"sqlite:///{tmp_path / 'x.sqlite'}", "--model-dir", str(tmp_path), "run"]
    done = subprocess.run([*base, "--once", "--metrics-port", "9108"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip() == "error: --metrics-port needs --interval (a one-off run has nothing to scrape)"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([*base, "--interval", "1", "--metrics-port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: cannot serve metrics on 127.0.0.1:{port}")


def samples_of(metrics: DaemonMetrics) -> list:
    return [s for family in metrics.registry.collect() for s in family.samples]
