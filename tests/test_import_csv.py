"""import-csv: column mapping, separators, time zones, and bad files that load nothing."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from conftest import tiny_settings
from core.errors import DataValidationError
from core.settings import with_section
from db.engine import make_engine
from db.schema import build_tables
from db.source import read_rows
from db_servers import KINDS, database
from pipeline.importer import CsvMapping, import_csv
from scheduler.cli import main
from simulation.fleet import simulate_fleet

FEATURES = ("flow", "vibration")
GOOD = """ts,unit,flow,vibration,anomaly
2026-01-01 00:00:00,A,100.5,2.5,0
2026-01-01 00:00:30,A,101.0,2.6,1
2026-01-01 00:00:00,B,99.0,,0
"""



@pytest.fixture
def small(tmp_path):
    """Settings with two signals on an SQLite file, and its engine and tables."""
    settings = with_section(tiny_settings(tmp_path), "data", features=FEATURES)
    engine = make_engine(settings.db_url)
    yield settings, engine, build_tables(settings)
    engine.dispose()


def write(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def table_rows(engine, tables) -> pd.DataFrame:
    """The source table in (compressor, time) order; empty when the table does not exist."""
    if not sa.inspect(engine).has_table(tables.source.name):
        return pd.DataFrame()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tables.source).order_by(tables.source.c.compressor_id, tables.source.c.timestamp)).mappings().all()
    return pd.DataFrame([dict(r) for r in rows])


MAPPING = CsvMapping("ts", compressor_col="unit", label_col="anomaly")


# ---------------------------------------------------------------- good files
@pytest.mark.parametrize("kind", KINDS)
def test_import_maps_columns_and_creates_the_table(kind, tmp_path):
    with database(kind, tmp_path) as url:
        settings = with_section(tiny_settings(tmp_path, db_url=url), "data", features=FEATURES)
        engine, tables = make_engine(url), build_tables(settings)
        try:
            assert import_csv(engine, tables, settings, write(tmp_path, GOOD), MAPPING) == 3
            rows = table_rows(engine, tables)
        finally:
            engine.dispose()
    assert list(rows["compressor_id"]) == ["A", "A", "B"]
    assert list(pd.to_datetime(rows["timestamp"])) == [datetime(2026, 1, 1, 0, 0), datetime(2026, 1, 1, 0, 0, 30), datetime(2026, 1, 1, 0, 0)]
    assert list(rows["flow"]) == [100.5, 101.0, 99.0]
    assert rows["vibration"].iloc[:2].tolist() == [2.5, 2.6] and pd.isna(rows["vibration"].iloc[2])  # empty cell -> NULL
    assert list(rows["label"]) == [0, 1, 0]


def test_semicolon_separator_with_one_compressor_id(small, tmp_path):
    settings, engine, tables = small
    path = write(tmp_path, "time;flow;vibration\n2026-01-01T00:00:00;1,5;7\n2026-01-01T00:00:30;2;8\n")
    # "1,5" is not a number with '.' decimals: the whole file is refused first ...
    with pytest.raises(DataValidationError, match=r"column 'flow', line 2: '1,5' is not a finite number"):
        import_csv(engine, tables, settings, path, CsvMapping("time", compressor_id="K1", sep=";"))
    assert table_rows(engine, tables).empty
    # ... and loads once it is fixed.
    path = write(tmp_path, "time;flow;vibration\n2026-01-01T00:00:00;1.5;7\n2026-01-01T00:00:30;2;8\n")
    assert import_csv(engine, tables, settings, path, CsvMapping("time", compressor_id="K1", sep=";")) == 2
    rows = table_rows(engine, tables)
    assert list(rows["compressor_id"]) == ["K1", "K1"]
    assert list(rows["flow"]) == [1.5, 2.0] and list(rows["vibration"]) == [7.0, 8.0]
    assert rows["label"].isna().all()  # no --label-col: labels stay empty


def test_time_zone_offsets_are_converted_to_utc(small, tmp_path):
    settings, engine, tables = small
    path = write(tmp_path, "ts,flow,vibration\n2026-01-01T01:00:00+01:00,1,2\n2026-01-01T00:00:30Z,3,4\n")
    import_csv(engine, tables, settings, path, CsvMapping("ts", compressor_id="Z"))
    assert list(pd.to_datetime(table_rows(engine, tables)["timestamp"])) == [datetime(2026, 1, 1, 0, 0), datetime(2026, 1, 1, 0, 0, 30)]


def test_simulated_telemetry_round_trips_through_csv(tmp_path):
    """All configured signals: what the pipeline reads back equals what was written to the CSV."""
    settings = tiny_settings(tmp_path)
    telemetry = simulate_fleet(2, 0.05, seed=3).telemetry
    path = tmp_path / "fleet.csv"
    telemetry.to_csv(path, index=False)
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    try:
        loaded = import_csv(engine, tables, settings, path, CsvMapping("timestamp", compressor_col="compressor_id", label_col="label"))
        assert loaded == len(telemetry)
        with engine.connect() as conn:
            back = read_rows(conn, tables, settings, "C02", with_label=True)
    finally:
        engine.dispose()
    expected = telemetry[telemetry["compressor_id"] == "C02"].reset_index(drop=True)
    assert len(back) == len(expected)
    assert (back["timestamp"].to_numpy() == expected["timestamp"].to_numpy(dtype="datetime64[us]")).all()
    for feature in settings.data.features:
        np.testing.assert_allclose(back[feature].to_numpy(), expected[feature].to_numpy(), rtol=1e-12, err_msg=feature)
    assert list(back["label"]) == list(expected["label"])


# ----------------------------------------------------------------- bad files
BAD_FILES = {
    "missing column": ("ts,unit,flow,anomaly\n2026-01-01,A,1,0\n", MAPPING, r"missing column\(s\): vibration"),
    "bad timestamp": (GOOD + "yesterday,A,1,2,0\n", MAPPING, r"column 'ts', line 5: 'yesterday' is not an ISO 8601 timestamp"),
    "empty timestamp": (GOOD.replace("2026-01-01 00:00:30", ""), MAPPING, r"column 'ts', line 3: '' is not an ISO 8601 timestamp"),
    "text in a signal": (GOOD.replace("101.0", "high"), MAPPING, r"column 'flow', line 3: 'high' is not a finite number"),
    "infinite signal": (GOOD.replace("101.0", "inf"), MAPPING, r"column 'flow', line 3: 'inf' is not a finite number"),
    "bad label": (GOOD.replace("2.6,1", "2.6,2"), MAPPING, r"column 'anomaly', line 3: '2' is not a 0/1 label"),
    "empty compressor id": (GOOD.replace(",B,", ",,"), MAPPING, r"column 'unit', line 4: '' is not a compressor id"),
    "empty file": ("", MAPPING, r"the file is empty"),
    "header only": ("ts,unit,flow,vibration,anomaly\n", MAPPING, r"no data rows below the header"),
    "wrong separator": (GOOD.replace(",", ";"), MAPPING, r"missing column\(s\): ts, unit, flow, vibration, anomaly \(the header was read as one column: is --sep ',' right\?\)"),
    "ragged row": (GOOD + "2026-01-01 00:01:00,A,1,2,0,9,9\n", MAPPING, r"not a readable CSV"),
    "both compressor options": (GOOD, CsvMapping("ts", compressor_col="unit", compressor_id="A"), r"exactly one of --compressor-col"),
    "neither compressor option": (GOOD, CsvMapping("ts"), r"exactly one of --compressor-col"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_loads_nothing(case, small, tmp_path):
    settings, engine, tables = small
    import_csv(engine, tables, settings, write(tmp_path, GOOD, "first.csv"), MAPPING)
    before = table_rows(engine, tables)
    text, mapping, message = BAD_FILES[case]
    with pytest.raises(DataValidationError, match=message):
        import_csv(engine, tables, settings, write(tmp_path, text), mapping)
    after = table_rows(engine, tables)
    pd.testing.assert_frame_equal(after, before)


def test_bad_file_does_not_create_the_table(small, tmp_path):
    settings, engine, tables = small
    with pytest.raises(DataValidationError):
        import_csv(engine, tables, settings, write(tmp_path, GOOD.replace("101.0", "x")), MAPPING)
    assert not sa.inspect(engine).has_table(tables.source.name)


def test_existing_table_without_a_named_signal(small, tmp_path):
    settings, engine, tables = small
    import_csv(engine, tables, settings, write(tmp_path, GOOD, "first.csv"), MAPPING)
    wider = with_section(settings, "data", features=(*FEATURES, "motor_current"))
    text = "ts,unit,flow,vibration,motor_current\n2026-01-02,A,1,2,3\n"
    with pytest.raises(DataValidationError, match=r"lacks column\(s\): motor_current; nothing loaded"):
        import_csv(engine, build_tables(wider), wider, write(tmp_path, text), CsvMapping("ts", compressor_col="unit"))
    assert len(table_rows(engine, tables)) == 3


def test_missing_file(small, tmp_path):
    settings, engine, tables = small
    with pytest.raises(DataValidationError, match="no such file"):
        import_csv(engine, tables, settings, tmp_path / "absent.csv", MAPPING)


# ---------------------------------------------------------------- command line
def test_cli_import_with_features_and_separator(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    path = write(tmp_path, GOOD.replace(",", ";"))
    args = ["--db-url", url, "import-csv", str(path), "--timestamp-col", "ts", "--compressor-col", "unit", "--label-col", "anomaly", "--sep", ";", "--features", "flow,vibration"]
    assert main(args) == 0
    loaded = [line for line in capsys.readouterr().err.splitlines() if "import-csv: loaded" in line]
    assert len(loaded) == 1 and "loaded 3 rows (2 compressors)" in loaded[0] and loaded[0].endswith(" s")
    settings = with_section(tiny_settings(tmp_path, db_url=url), "data", features=FEATURES)
    engine = make_engine(url)
    try:
        assert list(table_rows(engine, build_tables(settings))["flow"]) == [100.5, 101.0, 99.0]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--compressor-col", "unit", "--compressor-id", "A"], "give exactly one of --compressor-col"),
        ([], "give exactly one of --compressor-col"),
        (["--compressor-col", "unit", "--features", "flow,pressure"], "data.csv: missing column(s): pressure"),
    ],
    ids=["both", "neither", "unknown-signal"],
)
def test_cli_bad_input_exits_1_with_one_line(extra, message, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    path = write(tmp_path, GOOD)
    assert main(["--db-url", url, "import-csv", str(path), "--timestamp-col", "ts", "--features", "flow,vibration", *extra]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0]
    engine = make_engine(url)
    try:
        assert not sa.inspect(engine).has_table("compressor_telemetry")
    finally:
        engine.dispose()
