"""The full pipeline (simulate -> train -> run -> backfill -> status) on SQLite, PostgreSQL and MariaDB.

Each database test runs in its own database, created for it and dropped afterwards
(tests/db_servers.py). An unreachable server fails the test, naming the server.
"""
from __future__ import annotations

import pytest

from db_servers import KINDS, database
from pipeline_flow import Trained, check_pipeline, train_once


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """Trained once, on SQLite, through the command line; the other databases reuse the model."""
    return train_once(tmp_path_factory.mktemp("trained"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_full_pipeline(kind, trained, tmp_path, capsys):
    with database(kind, tmp_path) as url:
        check_pipeline(url, trained, capsys)


# ------------------------------------------------------------------ bulk writes (db/bulk.py)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from core.settings import Settings  # noqa: E402
from db.engine import make_engine  # noqa: E402
from db.results import insert_frame  # noqa: E402
from db.schema import build_tables, create_all  # noqa: E402

START = pd.Timestamp("2026-01-01")


def _awkward_rows(tables, n: int = 120) -> pd.DataFrame:
    """Detailed rows with NULLs, NaN, unicode and quotes in text, sub-second times, mixed lengths."""
    rng = np.random.default_rng(5)
    tops = np.array([None, "filter_dp, flow, vibration", "seal \"gas\", 'temp', ünïcødé ✓", "", "a,b;c\\d\ttab"], dtype=object)
    frame = pd.DataFrame(
        {
            "batch_id": "b-1",
            "compressor_id": np.where(np.arange(n) % 2, "C01", "compressor with a longer id"),
            "window_end": START + pd.to_timedelta(np.arange(n) * 30.5, unit="s"),
            "model_version": "v1",
            "score": rng.normal(size=n),
            "threshold": 0.5,
            "is_anomaly": rng.random(n) > 0.5,
            "consecutive_count": rng.integers(0, 2**31 - 1, n),
            "triggered": np.arange(n) % 7 == 0,
            "top_features": tops[np.arange(n) % len(tops)],
            "created_at": pd.Timestamp("2026-02-01 12:34:56.789012"),
        }
    )
    for i, column in enumerate(tables.error_columns):
        values = rng.normal(size=n) * 10.0 ** (i - 8)
        values[i::9] = np.nan
        frame[column] = values
    return frame


@pytest.mark.parametrize("kind", KINDS)
def test_bulk_insert_stores_every_value_exactly(kind, tmp_path):
    with database(kind, tmp_path) as url:
        engine, tables = make_engine(url), build_tables(Settings(db_url=url))
        try:
            create_all(engine, tables, include_source=False)
            frame = _awkward_rows(tables)
            with engine.begin() as conn:
                assert insert_frame(conn, tables.detailed, frame) == len(frame)
            columns = [tables.detailed.c[name] for name in frame.columns]
            with engine.connect() as conn:
                stored = pd.DataFrame(conn.execute(sa.select(*columns).order_by(tables.detailed.c.window_end)).all(), columns=frame.columns)
        finally:
            engine.dispose()
    assert len(stored) == len(frame)
    for name in ("window_end", "created_at"):
        assert (pd.to_datetime(stored[name]).to_numpy() == frame[name].to_numpy()).all(), name
    for name in ("score", "threshold", *tables.error_columns):
        np.testing.assert_array_equal(stored[name].astype(float).to_numpy(), frame[name].to_numpy(), err_msg=name)
    for name in ("is_anomaly", "triggered"):
        assert (stored[name].astype(bool) == frame[name]).all(), name
    assert (stored["consecutive_count"].astype(np.int64) == frame["consecutive_count"]).all()
    for name in ("compressor_id", "model_version", "batch_id", "top_features"):
        assert stored[name].tolist() == frame[name].tolist(), name


@pytest.mark.parametrize("kind", KINDS)
def test_bulk_insert_belongs_to_the_callers_transaction(kind, tmp_path):
    with database(kind, tmp_path) as url:
        engine, tables = make_engine(url), build_tables(Settings(db_url=url))
        try:
            create_all(engine, tables, include_source=False)
            with pytest.raises(RuntimeError, match="abandon"):
                with engine.begin() as conn:
                    insert_frame(conn, tables.detailed, _awkward_rows(tables))
                    raise RuntimeError("abandon the batch")
            with engine.begin() as conn:
                insert_frame(conn, tables.detailed, _awkward_rows(tables, 10))
            with pytest.raises(sa.exc.IntegrityError):  # the same windows again: the unique key refuses them
                with engine.begin() as conn:
                    insert_frame(conn, tables.results, pd.DataFrame({"compressor_id": ["C01"], "timestamp": [START], "model_version": ["v"], "score": [1.0], "is_anomaly": [True]}))
                    insert_frame(conn, tables.detailed, _awkward_rows(tables, 10))
            with engine.connect() as conn:
                assert conn.execute(sa.select(sa.func.count()).select_from(tables.detailed)).scalar_one() == 10
                assert conn.execute(sa.select(sa.func.count()).select_from(tables.results)).scalar_one() == 0
        finally:
            engine.dispose()


def test_bulk_insert_names_unknown_columns(tmp_path):
    engine, tables = make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}"), build_tables(Settings())
    create_all(engine, tables, include_source=False)
    with pytest.raises(KeyError, match="no column.*not_a_column"):
        with engine.begin() as conn:
            insert_frame(conn, tables.results, pd.DataFrame({"compressor_id": ["C01"], "not_a_column": [1]}))
    engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_bulk_insert_stores_aware_times_as_naive_utc(kind, tmp_path):
    local = pd.date_range("2026-01-01 02:00", periods=3, freq="30s", tz="Europe/Berlin")
    frame = pd.DataFrame({"compressor_id": "C01", "timestamp": local, "model_version": "v", "score": 1.0, "is_anomaly": False})
    with database(kind, tmp_path) as url:
        engine, tables = make_engine(url), build_tables(Settings(db_url=url))
        try:
            create_all(engine, tables, include_source=False)
            with engine.begin() as conn:
                insert_frame(conn, tables.results, frame)
            with engine.connect() as conn:
                stored = conn.execute(sa.select(tables.results.c.timestamp).order_by(tables.results.c.timestamp)).scalars().all()
        finally:
            engine.dispose()
    assert [pd.Timestamp(t) for t in stored] == list(pd.date_range("2026-01-01 01:00", periods=3, freq="30s"))


# ------------------------------------------------------------------ reads (db/source.py)
from core.settings import with_section  # noqa: E402
from db.source import read_rows, write_telemetry  # noqa: E402


@pytest.mark.parametrize("kind", KINDS)
def test_reads_return_exactly_the_rows_asked_for_in_chunks(kind, tmp_path):
    rng = np.random.default_rng(9)
    n = 50
    settings = Settings()
    telemetry = pd.DataFrame({"timestamp": START + pd.to_timedelta(np.arange(n) * 30.25, unit="s"), "compressor_id": "C01"})
    for feature in settings.data.features:
        telemetry[feature] = rng.normal(size=n) * 1e3
    telemetry.loc[3, "flow"] = np.nan
    telemetry.loc[4, "vibration"] = 1e-300
    telemetry["label"] = (np.arange(n) % 10 == 0).astype(int)
    other = telemetry.assign(compressor_id="C02", flow=-1.0)
    with database(kind, tmp_path) as url:
        settings = with_section(settings.replace(db_url=url), "scheduler", read_chunk_rows=7)
        engine, tables = make_engine(url), build_tables(settings)
        try:
            create_all(engine, tables)
            write_telemetry(engine, tables, pd.concat([other, telemetry.iloc[::-1]], ignore_index=True))
            with engine.connect() as conn:
                everything = read_rows(conn, tables, settings, "C01", with_label=True)
                part = read_rows(conn, tables, settings, "C01", after=telemetry["timestamp"][9].to_pydatetime(), until=telemetry["timestamp"][40].to_pydatetime())
                none = read_rows(conn, tables, settings, "C03")
        finally:
            engine.dispose()
    assert everything.columns.tolist() == ["timestamp", *settings.data.features, "label"]
    assert (everything["timestamp"].to_numpy() == telemetry["timestamp"].to_numpy()).all()
    np.testing.assert_array_equal(everything[list(settings.data.features)].to_numpy(float), telemetry[list(settings.data.features)].to_numpy())
    assert everything["label"].astype(int).tolist() == telemetry["label"].tolist()
    assert (part["timestamp"].to_numpy() == telemetry["timestamp"][10:41].to_numpy()).all()
    assert "label" not in part.columns and len(none) == 0
