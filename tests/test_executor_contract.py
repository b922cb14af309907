"""The executor contract: the local Runner and the DaskExecutor (one-process local cluster) run the same
small fleet and must agree on the report (one RunReport of BatchOutcomes, its totals equal to what
was written), the result tables of a live run and of a backfill, an idle replay, a failed compressor,
and what their observers (DaemonMetrics among them) are told. The command line's run metrics
(`--metrics-textfile`, `--metrics-port`) are checked on Dask in subprocesses that join the same cluster."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from distributed import Client, LocalCluster
from test_dask import _with_db, assert_same_results, snapshot
from ports import free_port
from test_metrics_endpoint import samples, scrape_until_a_run_succeeded, value, windows_in_db

from conftest import tiny_settings
from core.settings import with_section
from db.engine import make_engine
from db.schema import build_tables, create_all
from db.source import write_telemetry
from pipeline.batch import BatchOutcome
from pipeline.publish import train_and_publish
from scheduler.dask_executor import DaskExecutor
from scheduler.executor import RunObserver, RunReport
from scheduler.metrics import DaemonMetrics
from scheduler.runner import Runner
from simulation.fleet import simulate_fleet

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 1, 1)
TRAIN_END = START + timedelta(hours=8)
END = START + timedelta(days=1)
COMPRESSORS = ["C01", "C02", "C03"]
EXECUTORS = ["local", "dask"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three compressors, one day, an isolation-forest model trained on the first 8 hours and promoted."""
    tmp = tmp_path_factory.mktemp("contract")
    settings = with_section(tiny_settings(tmp), "detection", detector="iforest")
    telemetry = simulate_fleet(len(COMPRESSORS), 1.0, start=START, seed=5).telemetry
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    create_all(engine, tables)
    write_telemetry(engine, tables, telemetry)
    bundle = train_and_publish(engine, tables, settings, START, TRAIN_END)
    engine.dispose()
    return {"settings": settings, "telemetry": telemetry, "bundle": bundle}


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of one one-thread worker process, shared by this module's tests."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as local, Client(local) as client:
        yield client


def fresh_db(fleet, path: Path):
    """The fleet's settings on a new SQLite file holding only its telemetry."""
    return _with_db(fleet["settings"], f"sqlite:///{path}", fleet["telemetry"])


@contextlib.contextmanager
def executor_for(kind: str, settings, cluster):
    """A local Runner (the promoted model, loaded as the command line does) or a DaskExecutor on the cluster."""
    if kind == "local":
        runner = Runner(settings, make_engine(settings.db_url))
        try:
            yield runner
        finally:
            runner.engine.dispose()
    else:
        with DaskExecutor(settings, cluster.scheduler.address) as executor:
            yield executor


class Recorder(RunObserver):
    """Every event an executor sends, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_run_started(self, executor, mode):
        self.events.append(("started", mode))

    def on_batch(self, outcome):
        self.events.append(("batch", outcome))

    def on_run(self, executor, report):
        self.events.append(("run", report))

    def on_run_failed(self, executor, mode, exc, duration_s):
        self.events.append(("failed", mode, exc))

    def batches(self) -> list[BatchOutcome]:
        return [event[1] for event in self.events if event[0] == "batch"]


def run(executor, mode: str) -> RunReport:
    return executor.run_once() if mode == "live" else executor.backfill(TRAIN_END, END)


def metric(metrics: DaemonMetrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def db_counts(settings, mode: str) -> dict[str, int]:
    """Source rows a run reads (live: after the training end; backfill: from its start on) and the windows stored."""
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    ts = tables.source.c[settings.source.timestamp_column]
    read = ts > TRAIN_END if mode == "live" else ts.between(TRAIN_END, END)
    with engine.connect() as conn:
        counts = {
            "rows_read": conn.execute(sa.select(sa.func.count()).select_from(tables.source).where(read)).scalar(),
            "windows_scored": conn.execute(sa.select(sa.func.count()).select_from(tables.detailed)).scalar(),
            "anomaly_points": conn.execute(sa.select(sa.func.count()).select_from(tables.detailed).where(tables.detailed.c.is_anomaly)).scalar(),
        }
    engine.dispose()
    return counts


@pytest.mark.parametrize("mode", ["live", "backfill"])
@pytest.mark.parametrize("kind", EXECUTORS)
def test_a_run_reports_what_it_wrote_tells_its_observers_and_a_replay_writes_nothing_new(fleet, cluster, tmp_path, kind, mode):
    settings = fresh_db(fleet, tmp_path / "fleet.sqlite")
    recorder, metrics = Recorder(), DaemonMetrics()
    with executor_for(kind, settings, cluster) as executor:
        executor.observers += [recorder, metrics]
        report = run(executor, mode)
        first = snapshot(settings)
        replay = run(executor, mode)
    assert isinstance(report, RunReport) and report.mode == mode and report.ok and report.failed == []
    assert [o.compressor_id for o in report.outcomes] == COMPRESSORS
    assert all(isinstance(o, BatchOutcome) and o.status == "ok" and o.mode == mode for o in report.outcomes)
    assert set(report.workers) == (set(COMPRESSORS) if kind == "dask" else set())
    totals, written = report.totals(), db_counts(settings, mode)
    assert totals["windows_scored"] == written["windows_scored"] == sum(o.windows_scored for o in report.outcomes) > 3 * 1000
    assert totals["anomaly_points"] == written["anomaly_points"]
    assert totals["rows_read"] == written["rows_read"]

    # Observers: each run's start, every batch (the report's own outcomes), then the end.
    kinds = [event[0] for event in recorder.events]
    assert kinds == ["started", "batch", "batch", "batch", "run"] * 2
    told = sorted(recorder.batches()[:3], key=lambda o: o.compressor_id)
    assert len(told) == len(report.outcomes) and all(a is b for a, b in zip(told, report.outcomes))
    assert recorder.events[4][1] is report and recorder.events[9][1] is replay
    assert metric(metrics, "compressor_ad_runs_started_total") == 2 and metric(metrics, "compressor_ad_runs_succeeded_total") == 2
    assert metric(metrics, "compressor_ad_run_duration_seconds_count") == 2
    assert metric(metrics, "compressor_ad_model_info", version=fleet["bundle"].version, detector="iforest") == 1
    for outcome in report.outcomes:
        cid = outcome.compressor_id
        assert metric(metrics, "compressor_ad_batches_total", compressor_id=cid, status="ok") == (1 if mode == "live" else 2)
        assert metric(metrics, "compressor_ad_windows_scored_total", compressor_id=cid) == outcome.windows_scored * (1 if mode == "live" else 2)

    # The replay: a live run finds nothing new; a backfill rewrites identical rows and logs a second summary.
    second = snapshot(settings)
    if mode == "live":
        assert [o.status for o in replay.outcomes] == ["no_new_data"] * 3 and replay.totals() == dict.fromkeys(totals, 0)
        assert_same_results(first, second)
        assert metric(metrics, "compressor_ad_batches_total", compressor_id="C01", status="no_new_data") == 1
    else:
        assert replay.ok and replay.totals() == totals
        summary, first_summary = second.pop("lstm_batch_summary"), first.pop("lstm_batch_summary")
        assert len(summary) == 2 * len(first_summary) and len(summary.drop_duplicates()) == len(first_summary)
        assert_same_results(first, second)


@pytest.mark.parametrize("mode", ["live", "backfill"])
def test_both_executors_write_identical_result_tables(fleet, cluster, tmp_path, mode):
    tables = {}
    for kind in EXECUTORS:
        settings = fresh_db(fleet, tmp_path / f"{kind}.sqlite")
        with executor_for(kind, settings, cluster) as executor:
            assert run(executor, mode).ok
        tables[kind] = snapshot(settings)
    assert len(tables["local"]["lstm_predictions_detailed"]) > 3 * 1000
    assert_same_results(tables["local"], tables["dask"])


@pytest.mark.parametrize("kind", EXECUTORS)
def test_a_failed_compressor_is_reported_and_told_while_the_others_go_on(fleet, cluster, tmp_path, kind):
    settings = fresh_db(fleet, tmp_path / "fleet.sqlite")
    engine = make_engine(settings.db_url)
    with engine.begin() as conn:  # C02's checkpoint is unreadable as a timestamp: its batch fails
        conn.exec_driver_sql("INSERT INTO lstm_scheduler_checkpoint (compressor_id, last_timestamp, consecutive_count, updated_at) VALUES ('C02', 'garbage', 0, '2026-01-01 00:00:00')")
    engine.dispose()
    recorder, metrics = Recorder(), DaemonMetrics()
    with executor_for(kind, settings, cluster) as executor:
        executor.observers += [recorder, metrics]
        report = executor.run_once()
    assert not report.ok and report.failed == ["C02"]
    assert [(o.compressor_id, o.status) for o in report.outcomes] == [("C01", "ok"), ("C03", "ok")]
    assert sorted((o.compressor_id, o.status) for o in recorder.batches()) == [("C01", "ok"), ("C02", "failed"), ("C03", "ok")]
    assert recorder.events[-1] == ("run", report)
    assert set(windows_in_db(settings)) == {"C01", "C03"}
    assert metric(metrics, "compressor_ad_batches_total", compressor_id="C02", status="failed") == 1
    assert metric(metrics, "compressor_ad_runs_failed_total") == 1 and metric(metrics, "compressor_ad_last_run_success") == 0


@pytest.mark.parametrize("kind", EXECUTORS)
def test_a_run_that_cannot_start_is_told_to_the_observers(fleet, cluster, tmp_path, kind):
    settings = fresh_db(fleet, tmp_path / "fleet.sqlite").replace(model_dir=tmp_path / "no-models")
    recorder, metrics = Recorder(), DaemonMetrics()
    with executor_for(kind, settings, cluster) as executor:
        executor.observers += [recorder, metrics]
        with pytest.raises(Exception, match="no model promoted"):
            executor.run_once()
    assert [event[0] for event in recorder.events] == ["started", "failed"]
    assert "no model promoted" in str(recorder.events[1][2])
    assert metric(metrics, "compressor_ad_runs_failed_total") == 1 and metric(metrics, "compressor_ad_runs_succeeded_total") == 0


def cli(settings, *args: str) -> list[str]:
    return [sys.executable, "run_scheduler.py", "--db-url", settings.db_url, "--model-dir", str(settings.model_dir), *args]


CLI_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_AD_")}, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_run_once_on_dask_writes_the_metrics_textfile(fleet, cluster, tmp_path):
    settings = fresh_db(fleet, tmp_path / "fleet.sqlite")
    textfile = tmp_path / "compressor_ad.prom"
    command = cli(settings, "run", "--once", "--metrics-textfile", str(textfile), "--executor", "dask", "--dask-address", cluster.scheduler.address)
    done = subprocess.run(command, cwd=ROOT, env=CLI_ENV, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found = samples(textfile.read_text(encoding="utf-8"))
    assert value(found, "compressor_ad_runs_succeeded_total") == 1 and value(found, "compressor_ad_last_run_success") == 1
    assert value(found, "compressor_ad_model_info", version=fleet["bundle"].version, detector="iforest") == 1
    written = windows_in_db(settings)
    assert sorted(written) == COMPRESSORS
    for cid, count in written.items():
        assert value(found, "compressor_ad_batches_total", compressor_id=cid, status="ok") == 1
        assert value(found, "compressor_ad_windows_scored_total", compressor_id=cid) == count
        assert value(found, "compressor_ad_checkpoint_lag_seconds", compressor_id=cid) == 0


def test_the_dask_daemon_serves_metrics_and_stops_on_sigterm(fleet, cluster, tmp_path):
    settings = fresh_db(fleet, tmp_path / "fleet.sqlite")
    port = free_port()
    command = cli(settings, "run", "--interval", "60", "--metrics-port", str(port), "--executor", "dask", "--dask-address", cluster.scheduler.address)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=CLI_ENV, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        found = scrape_until_a_run_succeeded(port, proc, 240)
        assert value(found, "compressor_ad_runs_succeeded_total") == 1, log_path.read_text(errors="replace")[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    assert code == 0, log_path.read_text(errors="replace")[-2000:]
    assert value(found, "compressor_ad_run_interval_seconds") == 3600
    for cid, count in windows_in_db(settings).items():
        assert value(found, "compressor_ad_batches_total", compressor_id=cid, status="ok") == 1
        assert value(found, "compressor_ad_windows_scored_total", compressor_id=cid) == count > 0
    assert "daemon stopped after 1 runs (0 with failures)" in log_path.read_text(errors="replace")
