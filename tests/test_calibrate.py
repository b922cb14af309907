"""`calibrate`: new thresholds from a later normal period, network weights kept, parent recorded;
`models list` shows each compressor's calibration; old result tables gain the new columns."""
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from db.engine import make_engine
from db.schema import ADDED_COLUMNS, build_tables, create_all
from db_servers import KINDS, database
from models.artifacts import current_version, load_bundle, read_metadata
from scheduler.cli import main
from tests.conftest import copy_of_trained_fleet


@pytest.fixture
def copied(trained_fleet, tmp_path):
    """The shared trained fleet's database and model directory, copied so that calibrate may write."""
    settings = copy_of_trained_fleet(trained_fleet, tmp_path)
    args = ["--db-url", settings.db_url, "--model-dir", str(settings.model_dir)]
    return {"args": args, "model_dir": settings.model_dir, "parent": trained_fleet["bundle"].version, **trained_fleet}


def normal_day2(trained_fleet):
    """Day 2 hours without any labelled fault of C02 (the simulator labels its faults)."""
    start = trained_fleet["train_end"]
    return start, start + timedelta(hours=6)


def test_calibrate_keeps_weights_and_the_other_compressors(copied, capsys):
    start, end = normal_day2(copied)
    code = main([*copied["args"], "calibrate", "--start", start.isoformat(), "--end", end.isoformat(), "--compressor", "C02"])
    assert code == 0
    child_version = capsys.readouterr().out.strip().splitlines()[-1]
    assert current_version(copied["model_dir"]) == child_version
    parent, child = load_bundle(copied["model_dir"], copied["parent"]), load_bundle(copied["model_dir"], child_version)
    for a, b in zip(parent.detector.model.get_weights(), child.detector.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    meta = read_metadata(copied["model_dir"], child_version)
    assert meta["extra"]["parent_version"] == copied["parent"]
    assert meta["extra"]["calibration_period"] == [start.isoformat(), end.isoformat()]
    assert meta["alarm_rule"] == read_metadata(copied["model_dir"], copied["parent"])["alarm_rule"]
    record = meta["calibration"]["C02"]
    assert record["start"] >= start.isoformat()[:19] and record["end"] <= end.isoformat()[:19]
    assert record["windows"] > 600
    windows = np.random.default_rng(0).normal(size=(50, parent.window, len(parent.features))).astype(np.float32)
    for cid in ("C01", "C03"):  # untouched: identical statistics, threshold and scores
        assert child.thresholds[cid] == parent.thresholds[cid]
        assert child.calibration[cid] == parent.calibration[cid]
        np.testing.assert_array_equal(child.detector.anomaly_score(windows, cid), parent.detector.anomaly_score(windows, cid))
    assert child.thresholds["C02"] != parent.thresholds["C02"]

    assert main([*copied["args"], "models", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"parent={copied['parent']}" in listing
    line = next(row for row in listing.splitlines() if row.startswith("*") and child_version in row)
    assert "false_alarm_rate" in line and "alarm=k_of_n" in line
    detail = [row for row in listing.splitlines() if row.startswith("      C02:")]
    assert len(detail) == 2 and all("target 2.000%" in row and "held-out rate" in row for row in detail)


def test_calibrate_no_promote_and_bad_requests(copied, capsys):
    start, end = normal_day2(copied)
    args = [*copied["args"], "calibrate", "--start", start.isoformat(), "--end", end.isoformat()]
    assert main([*args, "--no-promote"]) == 0
    assert current_version(copied["model_dir"]) == copied["parent"]
    capsys.readouterr()
    assert main([*args, "--compressor", "C99"]) == 1
    assert "C99" in capsys.readouterr().err
    assert main([*copied["args"], "calibrate", "--start", end.isoformat(), "--end", start.isoformat()]) == 1
    assert "is not after its start" in capsys.readouterr().err
    short_end = (start + timedelta(minutes=22)).isoformat()  # about 15 windows of 30 rows
    assert main([*copied["args"], "calibrate", "--start", start.isoformat(), "--end", short_end]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: compressor C01: ") and "more normal data" in errors[0]


@pytest.mark.parametrize("kind", KINDS)
def test_tables_of_an_older_release_gain_the_new_columns(kind, tmp_path, settings):
    """Result tables created before alarm states existed get the nullable columns on the next start."""
    with database(kind, tmp_path) as url:
        engine = make_engine(url)
        tables = build_tables(settings)
        old = sa.MetaData()
        for table in tables.result_tables:
            keep = [c.copy() for c in table.columns if c.name not in ADDED_COLUMNS.get(table.name, ())]
            sa.Table(table.name, old, *keep)
        old.create_all(engine)
        try:
            create_all(engine, tables, include_source=False)
            create_all(engine, tables, include_source=False)  # a second start adds nothing
            inspector = sa.inspect(engine)
            for name, columns in ADDED_COLUMNS.items():
                present = {c["name"] for c in inspector.get_columns(name)}
                assert set(columns) <= present
            with engine.begin() as conn:
                conn.execute(sa.insert(tables.checkpoint).values(compressor_id="C01", consecutive_count=2, alarm_state="2:3:0.5:1:0", updated_at=sa.func.now()))
                assert conn.execute(sa.select(tables.checkpoint.c.alarm_state)).scalar_one() == "2:3:0.5:1:0"
        finally:
            engine.dispose()
