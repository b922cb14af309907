"""Hostile inputs at the edges, fast checks per class: timestamps outside the supported range,
extreme readings, over-long derived names, short CSV rows, a failed first import on MariaDB.

The scheduler-level cases (future rows, bad source timestamps, extreme readings in a run, one
compressor failing) are in tests/test_hostile_batches.py.
"""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given, settings as hsettings, strategies as st

from conftest import tiny_settings
from core.errors import DataValidationError, SettingsError
from core.settings import DataSettings, Settings, SourceSettings, load_settings, with_section
from core.timerange import SUPPORTED_END, SUPPORTED_START, check_timestamp, parse_timestamp
from db.engine import make_engine
from db.identifiers import UnsafeIdentifierError
from db.schema import build_tables
from db_servers import database
from pipeline.importer import CsvMapping, import_csv
from pipeline.validate import validate_rows, value_limits
from scheduler.cli import main

FEATURES = ("flow", "vibration")
MAPPING = CsvMapping("ts", compressor_col="unit")


# ------------------------------------------------------------------ item 1: the supported time range
@hsettings(max_examples=60, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_every_timestamp_is_either_supported_or_refused_in_one_line(value):
    if SUPPORTED_START <= value <= SUPPORTED_END:
        assert parse_timestamp(value.isoformat(), "x") == value
        assert np.datetime64(value, "ns").astype("datetime64[us]").astype(datetime) == value  # no wrap-around
    else:
        with pytest.raises(DataValidationError, match="outside the supported range") as info:
            parse_timestamp(value.isoformat(), "--start")
        assert "\n" not in str(info.value)


def test_cli_refuses_dates_outside_the_range_before_touching_anything(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'never.sqlite'}"
    for start, end in (("1000-01-01", "2026-01-01"), ("2026-01-01", "2300-01-01"), ("1677-09-21", "1677-09-22")):
        with pytest.raises(SystemExit) as info:
            main(["--db-url", url, "--model-dir", str(tmp_path / "m"), "backfill", "--start", start, "--end", end])
        assert info.value.code == 2
        assert "outside the supported range 1700-01-01 .. 2199-12-31" in capsys.readouterr().err
    assert not (tmp_path / "never.sqlite").exists()
    with pytest.raises(DataValidationError):
        check_timestamp(datetime(2262, 4, 12), "backfill end")


@pytest.mark.parametrize("stamp", [np.datetime64("1000-01-01", "us"), np.datetime64("2300-06-01", "us"), np.datetime64("1677-01-01", "us")])
def test_source_rows_outside_the_range_are_rejected_with_a_reason(stamp):
    times = np.array(["2026-01-01T00:00:00", "2026-01-01T00:00:30", "2026-01-01T00:01:00"], dtype="datetime64[us]")
    times[1] = stamp
    frame = pd.DataFrame({"timestamp": times, "flow": [1.0, 2.0, 3.0], "vibration": [1.0, 2.0, 3.0]})
    clean = validate_rows(frame, "timestamp", FEATURES, "skip", 2)
    assert clean.rejected == {"timestamp_out_of_range": 1} and clean.rows_rejected == 1
    assert list(clean.times.astype("datetime64[s]").astype(str)) == ["2026-01-01T00:00:00", "2026-01-01T00:01:00"]


@pytest.mark.parametrize("stamp", ["1000-01-01 00:00:00", "2262-04-12T00:00:00", "0001-01-01"])
def test_csv_timestamp_outside_the_range_is_refused_with_its_line(tmp_path, stamp):
    settings = with_section(tiny_settings(tmp_path), "data", features=FEATURES)
    path = tmp_path / "far.csv"
    path.write_text(f"ts,unit,flow,vibration\n2026-01-01 00:00:00,A,1,2\n{stamp},A,1,2\n", encoding="utf-8")
    engine = make_engine(settings.db_url)
    with pytest.raises(DataValidationError, match=r"line 3: .* is outside the supported range") as info:
        import_csv(engine, build_tables(settings), settings, path, MAPPING)
    assert "\n" not in str(info.value)
    assert not sa.inspect(engine).has_table("compressor_telemetry")


# ------------------------------------------------------------------ item 2: finite but extreme readings
@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=12))
def test_no_reading_beyond_its_limits_reaches_windowing(values):
    n = len(values)
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2026-01-01", periods=n, freq="30s"),
        "flow": values,
        "vibration": np.linspace(0, 1, n),
    })
    data = DataSettings(features=FEATURES, value_ranges=(("vibration", 0.0, 0.5),))
    low, high = value_limits(data, FEATURES)
    clean = validate_rows(frame, "timestamp", FEATURES, "skip", 2, (low, high))
    assert np.isfinite(clean.values).all()
    assert ((clean.values >= low.astype(np.float32)) & (clean.values <= high.astype(np.float32))).all()
    flow = np.asarray(values, dtype=np.float64)
    beyond = np.isfinite(flow) & (np.abs(flow) > 1e15)
    assert clean.rejected.get("out_of_range", 0) == int((beyond | (np.linspace(0, 1, n) > 0.5)).sum())


def test_value_ranges_are_read_and_checked_from_the_config_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[data]\nfeatures = ["flow", "vibration"]\nvalue_ranges = { vibration = [0, 50] }\nmax_abs_value = 1e9\n', encoding="utf-8")
    loaded = load_settings(config, env={})
    assert loaded.data.value_ranges == (("vibration", 0.0, 50.0),) and loaded.data.max_abs_value == 1e9
    for bad in ("{ vibration = [50, 0] }", "{ vibration = [0] }", "{ pressure = [0, 1] }", "[0, 1]"):
        config.write_text(f'[data]\nfeatures = ["flow", "vibration"]\nvalue_ranges = {bad}\n', encoding="utf-8")
        with pytest.raises(SettingsError, match="value_ranges"):
            load_settings(config, env={})


# ------------------------------------------------------------------ item 9: derived names
@pytest.mark.parametrize(
    "settings, what",
    [
        (Settings(data=DataSettings(features=("f" * 60,))), "error column 'err_f"),
        (Settings(source=SourceSettings(table="t" * 45)), "index 'ix_t"),
        (Settings(data=DataSettings(features=("Flow", "flow"))), "give the same error column name"),
    ],
)
def test_derived_names_are_checked_before_any_table_exists(settings, what):
    with pytest.raises(UnsafeIdentifierError, match=what) as info:
        build_tables(settings)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_longest_accepted_names_work_on_postgresql_and_mariadb(tmp_path):
    settings = Settings(source=SourceSettings(table="t" * 44, label_column=None), data=DataSettings(features=("f" * 59,)))
    for kind in ("postgresql", "mariadb"):
        with database(kind, tmp_path) as url:
            engine = make_engine(url)
            tables = build_tables(settings)
            tables.metadata.create_all(engine)
            inspector = sa.inspect(engine)
            assert "err_" + "f" * 59 in {c["name"] for c in inspector.get_columns("lstm_predictions_detailed")}
            assert {i["name"] for i in inspector.get_indexes("t" * 44)} == {f"ix_{'t' * 44}_compressor_time"}
            engine.dispose()


@pytest.mark.slow
def test_a_failed_first_import_on_mariadb_leaves_no_tables(tmp_path):
    settings = with_section(tiny_settings(tmp_path), "data", features=FEATURES)
    path = tmp_path / "ok.csv"
    path.write_text("ts,unit,flow,vibration\n2026-01-01 00:00:00,A,1,2\n", encoding="utf-8")
    with database("mariadb", tmp_path) as url:
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE unrelated (id INT)")
        tables = build_tables(settings)
        # An index MariaDB refuses (name over 64 characters): CREATE TABLE succeeds, then CREATE INDEX fails.
        sa.Index("ix_" + "x" * 70, tables.source.c.flow)
        with pytest.raises(sa.exc.SQLAlchemyError, match="Identifier name"):
            import_csv(engine, tables, settings, path, MAPPING)
        names = set(sa.inspect(engine).get_table_names())
        engine.dispose()
    assert names == {"unrelated"}


# ------------------------------------------------------------------ item 10: short CSV rows
@pytest.mark.parametrize("row, line", [("2026-01-01 00:00:30,A,1", 3), ("2026-01-01 00:00:30", 3), ("2026-01-01 00:00:30,A", 3)])
def test_a_short_csv_row_is_refused_with_its_line(tmp_path, capsys, row, line):
    path = tmp_path / "short.csv"
    path.write_text(f"ts,unit,flow,vibration\n2026-01-01 00:00:00,A,1,2\n{row}\n2026-01-01 00:01:00,A,1,2\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'short.sqlite'}"
    code = main(["--db-url", url, "import-csv", str(path), "--timestamp-col", "ts", "--compressor-col", "unit", "--features", "flow,vibration"])
    err = [e for e in capsys.readouterr().err.splitlines() if e.startswith("error:")]
    assert code == 1 and err == [f"error: {path}: line {line}: {row.count(',') + 1} field(s), the header has 4"]
    engine = sa.create_engine(url)
    assert not sa.inspect(engine).has_table("compressor_telemetry")
    engine.dispose()


def test_empty_cells_in_a_full_row_are_still_missing_values(tmp_path):
    settings = with_section(tiny_settings(tmp_path), "data", features=FEATURES)
    path = tmp_path / "empty.csv"
    path.write_text('ts,unit,flow,vibration\n2026-01-01 00:00:00,A,,\n"2026-01-01 00:00:30",A,1,"2"\n', encoding="utf-8")
    engine = make_engine(settings.db_url)
    assert import_csv(engine, build_tables(settings), settings, path, MAPPING) == 2
    engine.dispose()
