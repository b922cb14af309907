"""Does a threshold still hold on live data: the rule (fast) and the check after a real run and in `status`."""
from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.settings import with_section
from db.engine import make_engine
from db.schema import build_tables
from models.calibration import DRIFT_FACTOR, calibrated_rate, threshold_holds
from scheduler.cli import main
from scheduler.metrics import DaemonMetrics
from scheduler.runner import Runner
from scheduler.threshold_health import check_thresholds
from scheduler.status import fleet_status, format_status
from tests.conftest import copy_of_trained_fleet


def test_a_threshold_holds_until_the_recent_rate_is_both_several_times_and_significantly_over():
    assert threshold_holds(2880, 58, 0.02, 30)  # 2.0 %: as calibrated
    assert threshold_holds(2880, 150, 0.02, 30)  # 5.2 %: under DRIFT_FACTOR x 2 %
    assert not threshold_holds(2880, 900, 0.02, 30)  # 31 %: what a new operating point does
    # 100 % of 40 windows of 30 samples is one excursion, ~1.3 independent windows: no evidence either way
    assert threshold_holds(40, 40, 0.02, 30)
    assert not threshold_holds(4000, 4000, 0.02, 30)
    assert threshold_holds(0, 0, 0.02, 30)
    rate = 0.02
    just_over = int(2880 * DRIFT_FACTOR * rate) + 1
    assert threshold_holds(2880, just_over, rate, 2880)  # one independent window: no evidence


def test_the_calibrated_rate_is_the_target_else_the_held_out_rate():
    assert calibrated_rate({"target_rate": 0.02, "held_out_rate": 0.018, "windows": 500}) == 0.02
    assert calibrated_rate({"target_rate": None, "held_out_rate": 0.05, "windows": 500}) == 0.05
    assert calibrated_rate({"target_rate": None, "held_out_rate": 0.0, "windows": 500}) == 1 / 500
    assert calibrated_rate({}) is None


@pytest.fixture
def shifted(trained_fleet, tmp_path):
    """The trained fleet's database and models, copied; C01 moved to a new operating point after training."""
    settings = copy_of_trained_fleet(trained_fleet, tmp_path)
    tables = build_tables(settings)
    signal = settings.data.features[0]
    day1 = trained_fleet["fleet"].telemetry
    day1 = day1[day1["timestamp"] < trained_fleet["train_end"]]
    offset = 10 * float(day1[signal].std())
    engine = make_engine(settings.db_url)
    source, column = tables.source, tables.source.c[signal]
    with engine.begin() as conn:
        moved = conn.execute(
            sa.update(source).where(source.c[settings.source.compressor_column] == "C01", source.c[settings.source.timestamp_column] >= trained_fleet["train_end"]).values({column: column + offset})
        ).rowcount
    assert moved > 1000
    yield settings, engine, tables
    engine.dispose()


def test_a_run_warns_where_the_threshold_no_longer_holds_and_status_shows_it(shifted, caplog, capsys):
    settings, engine, tables = shifted
    runner, metrics = Runner(settings, engine), DaemonMetrics()
    runner.observers.append(metrics)
    with caplog.at_level(logging.WARNING, logger="scheduler.threshold_health"):
        report = runner.run_once()
    assert report.ok and sum(o.windows_scored for o in report.outcomes) > 0
    assert {h.compressor_id: h.holds for h in report.thresholds} == {"C01": False, "C02": True, "C03": True}
    gauge = metrics.registry.get_sample_value
    assert gauge("compressor_ad_threshold_holds", {"compressor_id": "C01"}) == 0
    assert gauge("compressor_ad_threshold_holds", {"compressor_id": "C02"}) == 1
    assert gauge("compressor_ad_recent_above_threshold_ratio", {"compressor_id": "C01"}) > DRIFT_FACTOR * gauge("compressor_ad_calibrated_above_threshold_ratio", {"compressor_id": "C01"})
    warnings = [r.getMessage() for r in caplog.records if r.name == "scheduler.threshold_health"]
    assert any(m.startswith("compressor C01: ") and "calibrated for 2.0%" in m and "calibrate --start ISO --end ISO --compressor C01" in m for m in warnings), warnings

    rows = {row["compressor_id"]: row for row in fleet_status(engine, tables, settings)}
    c01 = rows["C01"]["threshold"]
    assert c01["holds"] is False and c01["rate"] > DRIFT_FACTOR * c01["calibrated_rate"] and c01["windows"] > 1000
    assert c01["cell"].endswith(" !")
    assert all(rows[c]["threshold"]["windows"] > 1000 and rows[c]["threshold"]["rate"] < c01["rate"] for c in ("C02", "C03"))
    text = format_status(list(rows.values()))
    (line,) = [line for line in text.splitlines() if line.startswith("thresholds that no longer hold")]
    assert "C01" in line and "C02" not in line

    args = ["--db-url", settings.db_url, "--model-dir", str(settings.model_dir)]
    assert main([*args, "status", "--json"]) == 0
    printed = {row["compressor_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert printed["C01"]["threshold"]["holds"] is False


def test_the_check_is_off_at_zero_hours(shifted, caplog):
    settings, engine, _ = shifted
    settings = with_section(settings, "detection", threshold_check_hours=0.0)
    with caplog.at_level(logging.WARNING, logger="scheduler.threshold_health"):
        assert Runner(settings, engine).run_once().ok
    assert not [r for r in caplog.records if r.name == "scheduler.threshold_health"]


def test_windows_under_maintenance_do_not_count(shifted, trained_fleet, caplog):
    """C01's new operating point inside a maintenance window raises no alert, so it says nothing about the threshold."""
    settings, engine, tables = shifted
    args = ["--db-url", settings.db_url, "--model-dir", str(settings.model_dir)]
    start, end = trained_fleet["train_end"], trained_fleet["train_end"] + timedelta(days=2)
    assert main([*args, "maintenance", "add", "--compressor", "C01", "--start", start.isoformat(), "--end", end.isoformat(), "--reason", "set-point trial"]) == 0
    with caplog.at_level(logging.WARNING, logger="scheduler.threshold_health"):
        assert Runner(settings, engine).run_once().ok
    assert not [r for r in caplog.records if r.name == "scheduler.threshold_health" and "C01" in r.getMessage()]
    c01 = {row["compressor_id"]: row for row in fleet_status(engine, tables, settings)}["C01"]["threshold"]
    assert c01["holds"] is True and c01["windows"] < 100  # the day-1 windows before the maintenance window, at most


def test_a_database_gone_skips_the_check_not_the_run(shifted, caplog):
    settings, engine, tables = shifted
    gone = make_engine(f"sqlite:///{settings.db_url.removeprefix('sqlite:///')}.missing-dir/none.sqlite")
    with caplog.at_level(logging.WARNING, logger="scheduler.threshold_health"):
        assert check_thresholds(gone, tables, settings, "v", {"C01": {"target_rate": 0.02}}, ["C01"]) == []
    assert any(r.getMessage().startswith("threshold check skipped: ") for r in caplog.records)
