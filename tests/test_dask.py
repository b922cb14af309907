"""The Dask executor: the same results as the local one (PostgreSQL, SQLite), none lost or doubled when a
worker dies, and the notifications of the episodes its workers opened sent once by the client."""
from __future__ import annotations

import logging
import signal
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from distributed import Client, LocalCluster

from alert_servers import WebhookReceiver, self_signed
from core.errors import PipelineError
from core.settings import Settings, with_section
from db.engine import make_engine
from db.schema import build_tables, create_all
from db.scratch import scratch_database
from db.source import write_telemetry
from pipeline.publish import publish, train_from_source
from scheduler.cli import main
from scheduler.dask_executor import DaskExecutor
from scheduler.notifier import deliver
from scheduler.runner import Runner
from simulation.fleet import simulate_fleet
from scheduler_harness import assert_same_tables
from test_alert_episodes import touchy

START = datetime(2026, 1, 1)
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Columns that differ between any two runs: surrogate keys, batch ids, wall-clock times, lease holders.
VOLATILE = {"id", "batch_id", "created_at", "started_at", "finished_at", "duration_s", "updated_at", "lease_owner", "lease_expires_at"}
NATURAL_KEYS = {
    "lstm_predictions_detailed": ["compressor_id", "window_end", "model_version"],
    "anomaly_detection_results": ["compressor_id", "timestamp", "model_version"],
    "lstm_batch_summary": ["compressor_id", "mode", "range_start"],
    "lstm_scheduler_checkpoint": ["compressor_id"],
    "lstm_source_day_counts": ["compressor_id", "day_start"],
    "alert_episodes": ["compressor_id", "model_version", "start_time"],
    "maintenance_windows": ["compressor_id", "starts_at", "ends_at"],
    "alert_notifications": ["idempotency_key", "channel"],
}


@pytest.fixture(autouse=True)
def restore_process_state():
    """The command line reconfigures the root logger and the daemon the signal handlers; restore both."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for number, handler in signals.items():
        signal.signal(number, handler)


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two one-thread worker processes, shared by this module's tests."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local, Client(local) as client:
        yield client


@pytest.fixture(scope="module")
def postgres():
    try:
        with sa.create_engine(PG_URL).connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {str(exc).splitlines()[0]}")
    return PG_URL


def _with_db(settings: Settings, url: str, telemetry: pd.DataFrame) -> Settings:
    """The settings pointed at `url`, whose source table is filled with `telemetry`."""
    settings = settings.replace(db_url=url)
    engine = make_engine(url)
    create_all(engine, build_tables(settings))
    write_telemetry(engine, build_tables(settings), telemetry)
    engine.dispose()
    return settings


def snapshot(settings: Settings) -> dict[str, pd.DataFrame]:
    """Every result table without its volatile columns, sorted by its natural key."""
    engine = make_engine(settings.db_url)
    frames = {}
    with engine.connect() as conn:
        for table in build_tables(settings).result_tables:
            columns = [c for c in table.c if c.name not in VOLATILE]
            frame = pd.DataFrame(conn.execute(sa.select(*columns)).all(), columns=[c.name for c in columns])
            frames[table.name] = frame.sort_values(NATURAL_KEYS[table.name]).reset_index(drop=True)
    engine.dispose()
    return frames


def assert_same_results(expected: dict[str, pd.DataFrame], got: dict[str, pd.DataFrame]) -> None:
    """No duplicate natural keys, then the same rows: scores to float32 round-off (another process may score a
    window through another inference path or BLAS thread count), everything else exactly."""
    for name in expected:
        duplicated = got[name].duplicated(NATURAL_KEYS[name])
        assert not duplicated.any(), f"{name}: {int(duplicated.sum())} duplicate rows"
    assert_same_tables(got, expected)


def _cli(settings: Settings, *command: str) -> int:
    return main(["--db-url", settings.db_url, "--model-dir", str(settings.model_dir), *command])


def test_backfill_on_postgresql_matches_local_executor(trained_fleet, cluster, postgres, capsys):
    base, telemetry = trained_fleet["settings"], trained_fleet["fleet"].telemetry
    start, end = trained_fleet["train_end"], START + timedelta(days=2)
    with scratch_database(postgres, "dask_local") as local_url, scratch_database(postgres, "dask_dist") as dask_url:
        local_settings, dask_settings = _with_db(base, local_url, telemetry), _with_db(base, dask_url, telemetry)
        runner = Runner(local_settings, make_engine(local_url), trained_fleet["bundle"])
        assert runner.backfill(start, end, advance_checkpoint=True).ok
        runner.engine.dispose()
        code = _cli(dask_settings, "backfill", "--start", start.isoformat(), "--end", end.isoformat(), "--advance-checkpoint", "--executor", "dask", "--dask-address", cluster.scheduler.address)
        assert code == 0
        expected, got = snapshot(local_settings), snapshot(dask_settings)
    err = capsys.readouterr().err
    for cid in ("C01", "C02", "C03"):
        assert f"compressor {cid} [backfill] ok:" in err
    assert "backfill run" in err and "finished" in err and "0 failed" in err
    detailed = got["lstm_predictions_detailed"]
    assert set(detailed["compressor_id"]) == {"C01", "C02", "C03"}
    assert len(detailed) == got["lstm_batch_summary"]["windows_scored"].sum() > 3 * 2000
    assert detailed["is_anomaly"].any()
    assert (got["lstm_scheduler_checkpoint"]["last_timestamp"] > start).all()
    assert_same_results(expected, got)


def test_live_run_on_sqlite_with_dask_matches_local_and_is_exactly_once(trained_fleet, cluster, tmp_path, capsys):
    base, telemetry = trained_fleet["settings"], trained_fleet["fleet"].telemetry
    local_settings = _with_db(base, f"sqlite:///{tmp_path / 'local.sqlite'}", telemetry)
    dask_settings = _with_db(base, f"sqlite:///{tmp_path / 'dask.sqlite'}", telemetry)
    runner = Runner(local_settings, make_engine(local_settings.db_url), trained_fleet["bundle"])
    assert runner.run_once().ok
    runner.engine.dispose()

    assert _cli(dask_settings, "run", "--once", "--executor", "dask", "--dask-address", cluster.scheduler.address) == 0
    first = snapshot(dask_settings)
    assert_same_results(snapshot(local_settings), first)
    assert len(first["lstm_predictions_detailed"]) > 3 * 2000
    assert list(first["lstm_batch_summary"]["status"]) == ["ok"] * 3

    # The daemon mode on Dask: two more runs find nothing new and change nothing.
    assert _cli(dask_settings, "run", "--interval", "0.001", "--max-runs", "2", "--executor", "dask", "--dask-address", cluster.scheduler.address) == 0
    second = snapshot(dask_settings)
    for name in ("lstm_predictions_detailed", "anomaly_detection_results", "lstm_scheduler_checkpoint"):
        pd.testing.assert_frame_equal(second[name], first[name], check_exact=True, obj=name)
    err = capsys.readouterr().err
    for cid in ("C01", "C02", "C03"):
        assert err.count(f"compressor {cid} [live] ok:") == 1
        assert err.count(f"compressor {cid} [live] no_new_data:") == 2
    assert "daemon stopped after 2 runs (0 with failures)" in err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--executor", "dask"], "--executor dask needs --dask-address"),
        (["--executor", "dask", "--dask-address", "local:0"], "expected local:N with N >= 1"),
        (["--executor", "dask", "--dask-address", "somehost"], "expected tcp://host:8786"),
        (["--dask-address", "local:2"], "only used with --executor dask"),
    ],
)
def test_bad_executor_options_fail_with_a_clear_message(tmp_path, capsys, options, message):
    code = main(["--db-url", f"sqlite:///{tmp_path / 'x.sqlite'}", "backfill", "--start", "2026-01-01", "--end", "2026-01-02", *options])
    assert code == 1
    assert message in capsys.readouterr().err


def test_backfill_end_before_start_is_refused(settings):
    with pytest.raises(PipelineError, match="before its start"):
        DaskExecutor(settings, "local:1").backfill(datetime(2026, 1, 2), datetime(2026, 1, 1))


def test_a_worker_killed_mid_transaction_leaves_no_duplicates_and_complete_results(cluster, settings, tmp_path):
    """One worker process dies inside its first compressor's transaction; Dask reruns that compressor elsewhere."""
    settings = with_section(settings, "detection", detector="iforest")
    fleet = simulate_fleet(6, 1.0, start=START, seed=5)
    reference = _with_db(settings, f"sqlite:///{tmp_path / 'reference.sqlite'}", fleet.telemetry)
    target = _with_db(settings, f"sqlite:///{tmp_path / 'target.sqlite'}", fleet.telemetry)
    train_end = START + timedelta(hours=8)
    engine = make_engine(reference.db_url)
    bundle = train_from_source(engine, build_tables(reference), reference, START, train_end)
    publish(bundle, settings.model_dir)
    start, end = train_end, START + timedelta(days=1)
    assert Runner(reference, engine, bundle).backfill(start, end).ok
    engine.dispose()
    markers = tmp_path / "killed"
    markers.mkdir()

    def die_in_transaction(marker_dir: str) -> None:
        import os

        import pipeline.batch as batch

        original = batch.write_summary

        def write_summary(conn, tables, outcome, batch_id):
            # The compressor's results are inserted and its transaction is still open.
            Path(marker_dir, f"{os.getpid()}-{outcome.compressor_id}").touch()
            os._exit(1)

        write_summary.original = original
        batch.write_summary = write_summary

    def restore() -> None:
        import pipeline.batch as batch

        batch.write_summary = getattr(batch.write_summary, "original", batch.write_summary)

    doomed = sorted(cluster.scheduler_info(n_workers=-1)["workers"])[0]
    cluster.run(die_in_transaction, str(markers), workers=[doomed])
    try:
        with DaskExecutor(target, cluster.scheduler.address) as executor:
            report = executor.backfill(start, end)
    finally:
        cluster.run(restore)
    killed = sorted(p.name.split("-", 1)[1] for p in markers.iterdir())
    assert len(killed) == 1, f"expected one worker to die, markers: {killed}"
    assert report.ok and sorted(o.compressor_id for o in report.outcomes) == [f"C0{i}" for i in range(1, 7)]
    assert all(o.status == "ok" for o in report.outcomes)
    got, expected = snapshot(target), snapshot(reference)
    assert set(killed) <= set(got["lstm_predictions_detailed"]["compressor_id"])
    # The summary logs executions: should a worker die after committing a compressor but before the
    # client fetched its outcome, Dask reruns it and the rerun logs an identical second row.
    summary, expected_summary = got.pop("lstm_batch_summary"), expected.pop("lstm_batch_summary")
    pd.testing.assert_frame_equal(summary.drop_duplicates().reset_index(drop=True), expected_summary, check_exact=True)
    assert_same_results(expected, got)


def test_episodes_opened_on_workers_are_notified_once_also_after_a_replay(trained_fleet, cluster, tmp_path):
    """Workers write each new episode's outbox row in their batch transaction; the client sends the outbox
    after the run. A second live run and a backfill of the same range (with backfill notifications on)
    write no second row, so the receiver has each episode once."""
    secret = "whsec-dask-4f0b91c2e7"
    cert, key = self_signed(tmp_path)
    secret_file = tmp_path / "hook"
    secret_file.write_text(secret + "\n", encoding="utf-8")
    bundle = touchy(trained_fleet["bundle"])
    publish(bundle, tmp_path / "models")
    t, train_end = trained_fleet["fleet"].telemetry, trained_fleet["train_end"]
    rows = t[(t["timestamp"] > train_end) & (t["timestamp"] <= train_end + timedelta(hours=2))]
    receiver = WebhookReceiver(cert, key, secret).start()
    try:
        settings = with_section(
            trained_fleet["settings"].replace(model_dir=tmp_path / "models"), "notify",
            webhook_url=receiver.url, webhook_secret_file=str(secret_file), ca_file=str(cert), attempts=2, backoff_s=0.01,
        )
        settings = _with_db(settings, f"sqlite:///{tmp_path / 'notify.sqlite'}", rows)
        with DaskExecutor(settings, cluster.scheduler.address) as executor:
            assert executor.run_once().ok
            first = list(receiver.received)
            assert executor.run_once().ok
        replay = with_section(settings, "notify", backfill=True)
        with DaskExecutor(replay, cluster.scheduler.address) as executor:
            assert executor.backfill(rows["timestamp"].min().to_pydatetime(), rows["timestamp"].max().to_pydatetime()).ok
        engine, tables = make_engine(settings.db_url), build_tables(settings)
        assert deliver(engine, tables, settings).sent == 0
        with engine.connect() as conn:
            opened = conn.execute(sa.select(tables.alerts.episodes.c.compressor_id, tables.alerts.episodes.c.start_time)).all()
            outbox = conn.execute(sa.select(tables.alerts.notifications.c.status)).scalars().all()
        engine.dispose()
    finally:
        receiver.stop()
    assert opened and len(first) == len(opened)
    keys = [m["key"] for m in receiver.received]
    assert receiver.rejected == 0 and len(keys) == len(set(keys)) == len(opened)
    assert {(m["body"]["compressor_id"], m["body"]["start_time"]) for m in receiver.received} == {(cid, start.isoformat()) for cid, start in opened}
    assert outbox == ["sent"] * len(opened)


def test_a_daemons_workers_score_every_call_compiled_and_a_one_run_clients_keep_numpy(trained_fleet, tmp_path):
    """The worker's Runner takes the client's long-lived flag (scheduler/runner.py decides what it means)."""
    from models.inference import NUMPY_UP_TO
    from scheduler.dask_executor import ModelPlugin, cached_bundle

    settings = trained_fleet["settings"]
    version = trained_fleet["bundle"].version
    seen = {}
    try:
        for name, long_lived in (("one run", False), ("daemon", True)):  # one run first: both share the cached bundle
            cached_bundle.cache_clear()
            plugin = ModelPlugin(settings, version, "test-owner", long_lived)
            plugin._load("tcp://127.0.0.1:0")
            seen[name] = (plugin.runner.long_lived, plugin.runner.bundle.detector.reconstructor.numpy_up_to)
            plugin.runner.engine.dispose()
    finally:
        cached_bundle.cache_clear()
    assert seen == {"one run": (False, NUMPY_UP_TO), "daemon": (True, 0)}
