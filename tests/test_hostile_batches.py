"""Hostile source data through the scheduler: rows from the future, extreme readings, NULL and text
timestamps, dates outside the supported range, and ids MariaDB would merge. Each run must score what
is valid, count what is not by reason, and never let one compressor stop the others."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from core.errors import PipelineError
from db.engine import make_engine
from db_servers import database
from pipeline.scoring import score_windows
from pipeline.windows import build_windows
from scheduler.runner import Runner
from scheduler_harness import INTERVAL, TRAIN_END, append, prepared, run_live, snapshot, trained_small_fleet, write_config


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return trained_small_fleet(tmp_path_factory.getbasetemp() / "small_fleet")


def _db(fleet, tmp_path, name: str, url: str | None = None, **sections):
    config = write_config(tmp_path / f"{name}.toml", **sections)
    settings = fleet.settings(url or f"sqlite:///{tmp_path / f'{name}.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    return settings, engine, tables


def _reasons(engine, tables) -> pd.DataFrame:
    frame = snapshot(engine, tables)["lstm_batch_summary"]
    frame["reasons"] = frame["rejection_reasons"].map(lambda text: json.loads(text) if text else {})
    return frame


def _checkpoints(engine, tables) -> dict[str, datetime]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(tables.checkpoint.c.compressor_id, tables.checkpoint.c.last_timestamp)).all())


def test_a_row_from_the_future_is_held_back_and_moves_no_checkpoint(fleet, tmp_path):
    rows = fleet.live(2.0)
    first, later = rows[rows["timestamp"] <= TRAIN_END + timedelta(hours=1)], rows[rows["timestamp"] > TRAIN_END + timedelta(hours=1)]
    settings, engine, tables = _db(fleet, tmp_path, "future")
    future = first[first["compressor_id"] == "C01"].tail(2).copy()
    future["timestamp"] = [datetime(2099, 1, 1), datetime.utcnow() + timedelta(days=2)]
    append(engine, tables, pd.concat([first, future]))
    run_live(settings, engine, fleet.bundle)
    assert _checkpoints(engine, tables)["C01"] == first["timestamp"].max()
    append(engine, tables, later)
    run_live(settings, engine, fleet.bundle)
    summary = _reasons(engine, tables)
    c01 = summary[summary["compressor_id"] == "C01"]
    assert all(r.get("future_timestamp") == 2 for r in c01["reasons"])
    assert not any("late_beyond_allowance" in r for r in summary["reasons"])
    assert "held back" in c01["message"].iloc[-1]
    stored = snapshot(engine, tables)["lstm_predictions_detailed"]
    assert stored.groupby("compressor_id")["window_end"].max().to_dict() == {c: rows["timestamp"].max() for c in ("C01", "C02", "C03")}


@pytest.mark.parametrize("value", [1e30, 3.4028235e38, 1e39, -1e20])
def test_extreme_readings_are_rejected_and_no_score_is_nan(fleet, tmp_path, value):
    rows = fleet.live(1.0)
    hit = rows["timestamp"] == TRAIN_END + 40 * INTERVAL
    rows.loc[hit, fleet.bundle.features[2]] = value
    settings, engine, tables = _db(fleet, tmp_path, "extreme")
    append(engine, tables, rows)
    for _ in range(2):  # and the next run is not stuck on the same rows
        run_live(settings, engine, fleet.bundle)
    stored = snapshot(engine, tables)["lstm_predictions_detailed"]
    assert np.isfinite(stored["score"]).all() and set(stored["compressor_id"]) == {"C01", "C02", "C03"}
    reasons = _reasons(engine, tables)["reasons"]
    assert sorted(r.get("out_of_range") for r in reasons) == [1, 1, 1]
    assert _checkpoints(engine, tables) == {c: rows["timestamp"].max() for c in ("C01", "C02", "C03")}


def test_a_score_that_overflows_is_never_returned(fleet):
    rows = fleet.live(0.5, ("C01",))
    values = rows[list(fleet.bundle.features)].to_numpy(np.float32)
    values[20:22, 0] = 3e38  # past validation (a direct caller): the scaled error overflows float32
    windows = build_windows(values, rows["timestamp"].to_numpy("datetime64[ns]"), fleet.bundle.window, 45.0)
    scored = score_windows(fleet.bundle, "C01", windows, tuple(f"err_{f}" for f in fleet.bundle.features))
    assert np.isfinite(scored["score"]).all() and 0 < len(scored) < len(windows)
    kept = scored["window_end"].to_numpy()
    resumed = np.flatnonzero(kept > windows.end_times[21 + fleet.bundle.window - 1])[0]
    assert scored["consecutive_count"].iloc[resumed] <= 1  # the dropped windows break the run


def test_null_text_and_number_timestamps_are_counted_and_the_others_scored(fleet, tmp_path):
    url = f"sqlite:///{tmp_path / 'loose.sqlite'}"
    config = write_config(tmp_path / "loose.toml")
    settings = fleet.settings(url, config)
    columns = ", ".join(f'"{f}" REAL' for f in settings.data.features)
    engine = make_engine(url)
    with engine.begin() as conn:  # another program's table: no NOT NULL, typeless SQLite values
        conn.exec_driver_sql(f'CREATE TABLE compressor_telemetry ("timestamp" DATETIME, compressor_id VARCHAR(64), {columns}, label INTEGER)')
    engine, tables = prepared(url, settings)
    rows = fleet.live(1.0)
    append(engine, tables, rows)
    insert = sa.text('INSERT INTO compressor_telemetry ("timestamp", compressor_id) VALUES (:ts, :cid)').bindparams(sa.bindparam("ts", type_=sa.types.NullType()))
    with engine.begin() as conn:
        for ts in (None, "yesterday", "2026-13-45 99:00:00", 1234567):
            conn.execute(insert, {"ts": ts, "cid": "C02"})
    run_live(settings, engine, fleet.bundle)
    summary = _reasons(engine, tables).set_index("compressor_id")
    assert summary.loc["C02", "reasons"]["bad_timestamp"] == 4 and summary.loc["C02", "rows_rejected"] == 4
    assert summary.loc["C01", "reasons"].get("bad_timestamp") is None
    assert _checkpoints(engine, tables) == {c: rows["timestamp"].max() for c in ("C01", "C02", "C03")}


def test_a_backfill_outside_the_range_deletes_nothing(fleet, tmp_path):
    settings, engine, tables = _db(fleet, tmp_path, "ancient")
    append(engine, tables, fleet.live(1.0))
    run_live(settings, engine, fleet.bundle)
    before = snapshot(engine, tables)
    for start, end in ((datetime(1000, 1, 1), TRAIN_END + timedelta(hours=1)), (TRAIN_END, datetime(2262, 4, 12))):
        with pytest.raises(PipelineError, match="outside the supported range"):
            Runner(settings, engine, fleet.bundle).backfill(start, end)
    after = snapshot(engine, tables)
    for name in before:
        pd.testing.assert_frame_equal(after[name], before[name])


def test_one_compressor_failing_does_not_stop_the_others(fleet, tmp_path):
    settings, engine, tables = _db(fleet, tmp_path, "onefails")
    rows = fleet.live(1.0)
    append(engine, tables, rows)
    with engine.begin() as conn:  # C01's checkpoint row is unreadable as a timestamp: its batch fails
        conn.exec_driver_sql("INSERT INTO lstm_scheduler_checkpoint (compressor_id, last_timestamp, consecutive_count, updated_at) VALUES ('C01', 'garbage', 0, '2026-01-01 00:00:00')")
    report = Runner(settings, engine, fleet.bundle).run_once()
    assert report.failed == ["C01"]
    assert sorted(o.compressor_id for o in report.outcomes) == ["C02", "C03"]
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(tables.summary.c.compressor_id, tables.summary.c.status)).all())
    assert statuses == {"C01": "failed", "C02": "ok", "C03": "ok"}


def test_ids_mariadb_would_merge_are_refused_by_name(fleet, tmp_path):
    rows = fleet.live(1.0)
    extra = []
    for source, twin in (("C01", "c01"), ("C02", "C02 ")):
        copy = rows[rows["compressor_id"] == source].copy()
        copy["compressor_id"] = twin
        extra.append(copy)
    with database("mariadb", tmp_path) as url:
        settings, engine, tables = _db(fleet, tmp_path, "ids", url)
        with engine.begin() as conn:  # a source table made elsewhere, with the server's case-insensitive default
            conn.exec_driver_sql("ALTER TABLE compressor_telemetry MODIFY compressor_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL")
        append(engine, tables, pd.concat([rows, *extra]))
        report = Runner(settings, engine, fleet.bundle).run_once()
        summary = _reasons(engine, tables)
        stored = snapshot(engine, tables)["lstm_predictions_detailed"]
        engine.dispose()
    assert sorted(report.failed) == ["C01", "C02", "C02 ", "c01"]
    failed = summary[summary["status"] == "failed"].set_index("compressor_id")["message"]
    assert "is equal to 'c01' under the database's collation" in failed["C01"]
    assert "is equal to 'C02 '" in failed["C02"]
    assert set(stored["compressor_id"]) == {"C03"}
