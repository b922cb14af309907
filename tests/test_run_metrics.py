"""`run --once` run metrics (cron, systemd timer, Task Scheduler): the node-exporter textfile
written by the real CLI, equal to what the run wrote to the database, its last success carried
over a failed run; and a Pushgateway that cannot be reached ends the command with one line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from ports import free_port
from test_metrics_endpoint import copy_fleet, value, windows_in_db

from core.errors import PipelineError
from core.settings import MetricsSettings
from db.engine import make_engine
from scheduler.metrics import DaemonMetrics
from scheduler.metrics_export import export_run

ROOT = Path(__file__).resolve().parents[1]


def cli(settings, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_AD_")}
    command = [sys.executable, "run_scheduler.py", *(["--config", str(config)] if config else []), "--db-url", settings.db_url, "--model-dir", str(settings.model_dir), *args]
    return subprocess.run(command, cwd=ROOT, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, timeout=300)


def read_samples(path: Path) -> list:
    return [s for family in text_string_to_metric_families(path.read_text(encoding="utf-8")) for s in family.samples]


def open_episodes_in_db(settings) -> dict[str, float]:
    """compressor -> 1.0 when its latest stored window has an open episode, else 0.0."""
    engine = make_engine(settings.db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT p.compressor_id, p.in_alert FROM lstm_predictions_detailed p JOIN "
            "(SELECT compressor_id, MAX(window_end) AS last_end FROM lstm_predictions_detailed GROUP BY compressor_id) m "
            "ON p.compressor_id = m.compressor_id AND p.window_end = m.last_end"
        )).all()
    engine.dispose()
    return {cid: float(bool(in_alert)) for cid, in_alert in rows}


def test_run_once_writes_a_textfile_and_keeps_the_last_success_over_a_failed_run(trained_fleet, tmp_path):
    settings = copy_fleet(trained_fleet, tmp_path)
    textfile = tmp_path / "node-exporter" / "compressor_ad.prom"
    textfile.parent.mkdir()

    done = cli(settings, "run", "--once", "--metrics-textfile", str(textfile))
    assert done.returncode == 0, done.stderr[-2000:]
    found = read_samples(textfile)
    assert sorted(p.name for p in textfile.parent.iterdir()) == ["compressor_ad.prom"]  # no temporary file left
    assert value(found, "compressor_ad_runs_succeeded_total") == 1 and value(found, "compressor_ad_runs_failed_total") == 0
    assert value(found, "compressor_ad_last_run_success") == 1
    assert value(found, "compressor_ad_run_interval_seconds") == 15 * 60  # [metrics] run_interval_minutes
    assert value(found, "compressor_ad_notifications_pending") == 0
    last_success = value(found, "compressor_ad_last_success_timestamp_seconds")
    assert last_success == value(found, "compressor_ad_last_run_timestamp_seconds") > 0
    written, episodes = windows_in_db(settings), open_episodes_in_db(settings)
    assert set(written) == set(trained_fleet["bundle"].compressors) == set(episodes)
    for cid, count in written.items():
        assert value(found, "compressor_ad_windows_scored_total", compressor_id=cid) == count
        assert value(found, "compressor_ad_alert_open", compressor_id=cid) == episodes[cid]
        assert value(found, "compressor_ad_checkpoint_lag_seconds", compressor_id=cid) == 0

    # A failed run (no model to load), the textfile named in [metrics] of a config file.
    config = tmp_path / "plant.toml"
    config.write_text(f'[metrics]\ntextfile = "{textfile}"\nrun_interval_minutes = 60.0\n', encoding="utf-8")
    done = cli(settings.replace(model_dir=tmp_path / "no-models"), "run", "--once", config=config)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("error: no model promoted")
    found = read_samples(textfile)
    assert value(found, "compressor_ad_runs_failed_total") == 1 and value(found, "compressor_ad_last_run_success") == 0
    assert value(found, "compressor_ad_last_success_timestamp_seconds") == last_success
    assert value(found, "compressor_ad_last_run_timestamp_seconds") > last_success
    assert value(found, "compressor_ad_run_interval_seconds") == 3600


def test_an_unreachable_pushgateway_is_one_line(tmp_path):
    port = free_port()
    with pytest.raises(PipelineError) as raised:
        export_run(DaemonMetrics(), MetricsSettings(pushgateway=f"http://user:secret@127.0.0.1:{port}/"), succeeded=True)
    message = str(raised.value)
    assert message.startswith(f"run metrics not delivered to the Pushgateway at http://127.0.0.1:{port}: ")
    assert "secret" not in message and "\n" not in message


@pytest.mark.slow
def test_metrics_options_are_for_run_once(tmp_path):
    base = [sys.executable, "run_scheduler.py", "--db-url", f"sqlite:///{tmp_path / 'x.sqlite'}", "--model-dir", str(tmp_path), "run"]
    done = subprocess.run([*base, "--interval", "5", "--pushgateway", "http://127.0.0.1:9091"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --pushgateway and --metrics-textfile are for run --once (the daemon serves --metrics-port)"
    done = subprocess.run([*base, "--once", "--metrics-textfile", str(tmp_path / "x.txt")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: [metrics] textfile must end in .prom (the node exporter reads only those), got '{tmp_path / 'x.txt'}'"


def test_the_outbox_backlog_is_a_metric(settings):
    """compressor_ad_notifications_pending counts the unsent rows of alert_notifications."""
    from datetime import datetime

    import sqlalchemy as sa
    from prometheus_client import CollectorRegistry

    from db.engine import make_engine
    from db.schema import build_tables, create_all
    from scheduler.metrics import DaemonMetrics

    engine, tables = make_engine(settings.db_url), build_tables(settings)
    create_all(engine, tables)
    now = datetime(2026, 1, 2)
    row = {"channel": "webhook", "kind": "opened", "compressor_id": "C01", "episode_start": now, "model_version": "v1",
           "payload": "{}", "attempts": 0, "next_attempt_at": now, "created_at": now}
    with engine.begin() as conn:
        for key, status in (("a", "pending"), ("b", "pending"), ("c", "sent")):
            conn.execute(sa.insert(tables.alerts.notifications).values(idempotency_key=key, status=status, **row))
    registry = CollectorRegistry()
    DaemonMetrics(registry).observe_checkpoints(engine, tables, settings)
    engine.dispose()
    assert registry.get_sample_value("compressor_ad_notifications_pending") == 2
