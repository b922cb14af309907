"""Data as it really arrives, and broken setups: what is scored, what is counted, what the user sees.

Late rows within the lateness allowance (beyond it: tests/test_late_rows.py), gaps, duplicate
timestamps, NaN / inf / text in numeric columns, out-of-order inserts, an unknown compressor, an
empty range, a corrupt model file, an unreachable database and a source table that lacks a column.
"""
from __future__ import annotations

import json
import shutil
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from scheduler.cli import main
from scheduler_harness import INTERVAL, TRAIN_END, append, assert_same_tables, prepared, run_live, snapshot, trained_small_fleet, write_config

RESULT_TABLES = ("lstm_predictions_detailed", "anomaly_detection_results", "lstm_scheduler_checkpoint")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return trained_small_fleet(tmp_path_factory.getbasetemp() / "small_fleet")



def _db(fleet, tmp_path, name: str, **sections):
    config = write_config(tmp_path / f"{name}.toml", **sections)
    settings = fleet.settings(f"sqlite:///{tmp_path / f'{name}.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    return settings, engine, tables


def _summary(engine, tables) -> pd.DataFrame:
    frame = snapshot(engine, tables)["lstm_batch_summary"]
    frame["reasons"] = frame["rejection_reasons"].map(lambda text: json.loads(text) if text else {})
    return frame


def _same(got: dict, expected: dict, names=RESULT_TABLES) -> None:
    """The same rows; a window scored in another batch is the same to float32 round-off (assert_same_tables)."""
    assert_same_tables({n: got[n] for n in names}, {n: expected[n] for n in names})


def _at(rows: pd.DataFrame, after: timedelta, count: int) -> pd.Series:
    """Mask of `count` consecutive timestamps (every compressor) starting `after` the end of training."""
    first = TRAIN_END + after
    return (rows["timestamp"] >= first) & (rows["timestamp"] < first + count * INTERVAL)


def test_late_rows_within_the_allowance_are_scored_as_if_on_time(fleet, tmp_path):
    rows = fleet.live(3.5)
    hole = _at(rows, timedelta(hours=2, minutes=40), 4)  # within 30 min of the checkpoint at 3 h
    settings, engine, tables = _db(fleet, tmp_path, "late")
    append(engine, tables, rows[(rows["timestamp"] <= TRAIN_END + timedelta(hours=3)) & ~hole])
    run_live(settings, engine, fleet.bundle)
    append(engine, tables, rows[hole | (rows["timestamp"] > TRAIN_END + timedelta(hours=3))])
    run_live(settings, engine, fleet.bundle)
    ref_settings, ref_engine, ref_tables = _db(fleet, tmp_path, "reference")
    append(ref_engine, ref_tables, rows)
    run_live(ref_settings, ref_engine, fleet.bundle)
    _same(snapshot(engine, tables), snapshot(ref_engine, ref_tables))
    last = _summary(engine, tables).sort_values("range_end").groupby("compressor_id").last()
    # The 4 late rows complete their own windows and the 9 that would have spanned the hole.
    assert (last["reasons"].map(lambda r: r.get("late_within_allowance")) == 4 + 9).all()


def test_a_gap_breaks_the_windows_and_is_counted(fleet, tmp_path):
    rows = fleet.live(2.0)
    gap = _at(rows, timedelta(hours=1), 20)  # 10 minutes without rows
    settings, engine, tables = _db(fleet, tmp_path, "gap")
    append(engine, tables, rows[~gap])
    run_live(settings, engine, fleet.bundle)
    stored = snapshot(engine, tables)
    assert (_summary(engine, tables)["gaps"] == 1).all()
    ends = stored["lstm_predictions_detailed"]["window_end"]
    resume = TRAIN_END + timedelta(hours=1) + 20 * INTERVAL
    spanning = (ends >= resume) & (ends < resume + 9 * INTERVAL)  # would contain rows from before the gap
    assert not spanning.any()
    assert ((ends == resume + 9 * INTERVAL).groupby(stored["lstm_predictions_detailed"]["compressor_id"]).sum() == 1).all()


def test_duplicate_timestamps_are_merged_into_their_mean(fleet, tmp_path):
    rows = fleet.live(2.0)
    twice = rows[_at(rows, timedelta(hours=1), 5)].copy()
    feature = fleet.bundle.features[0]
    twice[feature] = twice[feature] + 0.2
    settings, engine, tables = _db(fleet, tmp_path, "dup")
    append(engine, tables, pd.concat([rows, twice]))
    run_live(settings, engine, fleet.bundle)
    merged = rows.copy()
    at = _at(rows, timedelta(hours=1), 5)
    merged.loc[at, feature] = (rows.loc[at, feature] + twice[feature]) / 2
    ref_settings, ref_engine, ref_tables = _db(fleet, tmp_path, "reference")
    append(ref_engine, ref_tables, merged)
    run_live(ref_settings, ref_engine, fleet.bundle)
    _same(snapshot(engine, tables), snapshot(ref_engine, ref_tables))
    reasons = _summary(engine, tables)["reasons"]
    assert (reasons.map(lambda r: r.get("duplicate_timestamp")) == 5).all()


@pytest.mark.parametrize("rule", ["skip", "impute"])
def test_nan_inf_and_text_in_numeric_columns(fleet, tmp_path, rule):
    rows = fleet.live(2.0)
    settings, engine, tables = _db(fleet, tmp_path, "bad", data={"missing_value_rule": rule})
    append(engine, tables, rows)
    assert fleet.bundle.features[1] == "seal_gas_flow"
    # Untyped values, as another program would write them (SQLite keeps text in a REAL column).
    update = sa.text('UPDATE compressor_telemetry SET seal_gas_flow = :value WHERE "timestamp" = :ts').bindparams(
        sa.bindparam("value", type_=sa.types.NullType()), sa.bindparam("ts", type_=tables.source.c["timestamp"].type)
    )
    marks = {"nan": timedelta(minutes=30), "inf": timedelta(minutes=60), "text": timedelta(minutes=90)}
    with engine.begin() as conn:
        for kind, offset in marks.items():
            value = {"nan": None, "inf": float("inf"), "text": "n/a"}[kind]
            assert conn.execute(update, {"value": value, "ts": TRAIN_END + offset}).rowcount == 3
    run_live(settings, engine, fleet.bundle)
    summary = _summary(engine, tables)
    for reasons in summary["reasons"]:
        assert reasons["non_numeric"] == 1 and reasons["infinite"] == 1
        if rule == "skip":
            assert reasons["missing_value"] == 3
        else:
            assert reasons["imputed"] == 3 and "missing_value" not in reasons
    ends = snapshot(engine, tables)["lstm_predictions_detailed"]["window_end"]
    covering = sum(((ends >= TRAIN_END + o) & (ends < TRAIN_END + o + 10 * INTERVAL)).sum() for o in marks.values())
    assert covering == (0 if rule == "skip" else 3 * 3 * 10), "skip: no window contains a bad row; impute: all do"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.source)).scalar_one() == len(rows)


def test_out_of_order_inserts_give_the_same_results(fleet, tmp_path):
    rows = fleet.live(2.0)
    settings, engine, tables = _db(fleet, tmp_path, "shuffled")
    shuffled = rows.sample(frac=1.0, random_state=3)
    for part in np.array_split(np.arange(len(shuffled)), 4):
        append(engine, tables, shuffled.iloc[part])
    run_live(settings, engine, fleet.bundle)
    ref_settings, ref_engine, ref_tables = _db(fleet, tmp_path, "reference")
    append(ref_engine, ref_tables, rows)
    run_live(ref_settings, ref_engine, fleet.bundle)
    _same(snapshot(engine, tables), snapshot(ref_engine, ref_tables), (*RESULT_TABLES, "lstm_batch_summary"))


def test_an_unknown_compressor_is_skipped_with_its_rows_kept(fleet, tmp_path):
    rows = fleet.live(1.0, ("C01", "C02"))
    rows.loc[rows["compressor_id"] == "C02", "compressor_id"] = "C99"
    settings, engine, tables = _db(fleet, tmp_path, "unknown")
    append(engine, tables, rows)
    for _ in range(2):
        run_live(settings, engine, fleet.bundle)
    stored = snapshot(engine, tables)
    skipped = _summary(engine, tables).query("compressor_id == 'C99'")
    assert list(skipped["status"]) == ["skipped", "skipped"]
    assert all(r == {"unknown_compressor": 120} for r in skipped["reasons"])
    assert "not in model" in skipped["message"].iloc[0]
    checkpoints = stored["lstm_scheduler_checkpoint"].set_index("compressor_id")["last_timestamp"]
    assert pd.isna(checkpoints["C99"]) and checkpoints["C01"] == rows["timestamp"].max()
    assert set(stored["lstm_predictions_detailed"]["compressor_id"]) == {"C01"}
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(tables.source).where(tables.source.c.compressor_id == "C99")).scalar_one()
    assert count == 120


def test_an_empty_range_is_a_clean_no_op(fleet, tmp_path, capsys):
    settings, engine, tables = _db(fleet, tmp_path, "empty")
    append(engine, tables, fleet.live(1.0))
    base = ["--config", str(tmp_path / "empty.toml"), "--db-url", settings.db_url, "--model-dir", str(fleet.model_dir)]
    early = [(TRAIN_END - timedelta(days=5)).isoformat(), (TRAIN_END - timedelta(days=4)).isoformat()]
    assert main([*base, "backfill", "--start", early[0], "--end", early[1]]) == 0
    assert main([*base, "backfill", "--start", early[1], "--end", early[0]]) == 1
    assert "is before its start" in capsys.readouterr().err
    stored = snapshot(engine, tables)
    assert stored["lstm_predictions_detailed"].empty and stored["lstm_batch_summary"].empty
    assert stored["lstm_scheduler_checkpoint"]["last_timestamp"].isna().all()


def test_a_corrupt_model_file_is_refused(fleet, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(fleet.model_dir, models)
    version = fleet.bundle.version
    with (models / "versions" / version / "model.keras").open("ab") as handle:
        handle.write(b"\0")
    settings, engine, tables = _db(fleet, tmp_path, "corrupt")
    append(engine, tables, fleet.live(1.0))
    code = main(["--config", str(tmp_path / "corrupt.toml"), "--db-url", settings.db_url, "--model-dir", str(models), "run", "--once"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == f"error: model version {version}: file model.keras does not match its SHA-256 (modified or corrupt); retrain or restore it"
    assert snapshot(engine, tables)["lstm_predictions_detailed"].empty


def test_an_unreachable_database_is_one_clear_line(fleet, tmp_path, capsys):
    config = write_config(tmp_path / "eo.toml", scheduler={"retry_attempts": 2, "retry_base_delay_s": 0.05})
    url = "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/nowhere"
    code = main(["--config", str(config), "--db-url", url, "--model-dir", str(fleet.model_dir), "run", "--once"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: database:") and "127.0.0.1" in err[0] and "hunter2" not in err[0]


def test_a_source_table_without_a_column_is_named(fleet, tmp_path, capsys):
    config = write_config(tmp_path / "eo.toml")
    url = f"sqlite:///{tmp_path / 'missing.sqlite'}"
    settings = fleet.settings(url, config)
    columns = ", ".join(f'"{f}" REAL' for f in settings.data.features if f != "vibration")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE compressor_telemetry ("timestamp" DATETIME NOT NULL, compressor_id VARCHAR(64) NOT NULL, {columns})')
    engine.dispose()
    code = main(["--config", str(config), "--db-url", url, "--model-dir", str(fleet.model_dir), "run", "--once"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: source table 'compressor_telemetry' lacks column(s): vibration"
