"""sql/: schema.sql in step with db/schema.py; views.sql and roles.sql run on real databases."""
from __future__ import annotations

import importlib.util
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from core.settings import Settings
from db.day_counts import counted, replace_day_counts
from db.engine import make_engine
from db.results import Checkpoint, delete_window_range, insert_frame, read_checkpoint, save_checkpoint
from db.schema import build_tables, create_all
from db.scratch import scratch_database
from db.source import read_rows, write_telemetry
from db_servers import KINDS, database, require_server, sql_statements

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
T0 = datetime(2026, 3, 1)


def _generator():
    spec = importlib.util.spec_from_file_location("sql_generate", SQL_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mariadb", "mssql"])
def test_committed_schema_matches_the_table_definitions(dialect):
    committed = (SQL_DIR / dialect / "schema.sql").read_text(encoding="utf-8")
    assert committed == _generator().render(dialect), f"sql/{dialect}/schema.sql is out of date: run python sql/generate.py"


def test_schema_files_use_each_dialects_types():
    texts = {d: (SQL_DIR / d / "schema.sql").read_text(encoding="utf-8") for d in ("postgresql", "mariadb", "mssql")}
    assert "window_end TIMESTAMP WITHOUT TIME ZONE NOT NULL" in texts["postgresql"]
    assert "is_anomaly BOOLEAN NOT NULL" in texts["postgresql"]
    assert "window_end DATETIME(6) NOT NULL" in texts["mariadb"]
    for fragment in ("window_end DATETIME2 NOT NULL", "compressor_id NVARCHAR(64) NOT NULL", "is_anomaly BIT NOT NULL", "score FLOAT(53) NOT NULL"):
        assert fragment in texts["mssql"]
    for text in texts.values():
        assert "CREATE INDEX ix_detailed_compressor_time ON lstm_predictions_detailed (compressor_id, window_end)" in text
        assert "CREATE INDEX ix_compressor_telemetry_compressor_time ON compressor_telemetry (compressor_id, timestamp)" in text


def test_every_dialect_has_its_three_files():
    for dialect in ("sqlite", "postgresql", "mariadb", "mssql"):
        for name in ("schema.sql", "views.sql", "roles.sql"):
            assert (SQL_DIR / dialect / name).stat().st_size > 200, f"sql/{dialect}/{name}"
        assert sql_statements(SQL_DIR / dialect / "views.sql"), f"sql/{dialect}/views.sql has no statement"


# ------------------------------------------------------------------ the events view
SIGNALS = {
    "a": "filter_dp, seal_gas_flow, vibration",
    "b": "seal_gas_flow, filter_dp, flow",
    "c": "temperature, flow, motor_current",
    "d": "vibration, motor_current, flow",
}
# (seconds after T0, is_anomaly, consecutive_count, triggered, in_alert, score, top signals key)
C01_V1 = [
    (0, False, 0, False, False, 0.1, None),
    (30, True, 1, False, False, 2.0, "a"),  # before the episode opens: not part of it
    (60, True, 2, False, False, 5.0, "b"),
    (90, True, 3, True, True, 3.0, "a"),  # episode 1 opens
    (120, False, 0, False, True, 0.2, None),  # a normal window inside the quiet period
    (150, True, 1, False, True, 4.0, "c"),  # peak of episode 1
    (180, False, 0, False, True, 0.3, None),
    (210, False, 0, False, False, 0.3, None),  # closed after the quiet period
    (240, True, 1, False, False, 6.0, "d"),  # anomalous but no episode: not an event
    (270, True, 1, True, True, 2.2, "d"),  # episode 2 opens
    (3900, True, 1, False, True, 2.9, "c"),  # after a data gap the episode goes on
    (3930, False, 0, False, False, 0.1, None),
    (3960, None, 0, False, None, 0.1, None),  # a row of an older release (no in_alert): no event
]
C01_V2 = [
    (0, False, 0, False, False, 0.1, None),
    (30, True, 1, False, False, 1.1, "a"),
    (60, True, 2, True, True, 1.7, "c"),
    (90, False, 0, False, False, 0.1, None),
]
C02_V1 = [
    (0, True, 1, True, True, 2.0, "b"),  # ties with the next window: the earlier one is the peak
    (30, True, 2, False, True, 2.0, "c"),
    (60, False, 0, False, False, 0.1, None),
]
EXPECTED_EVENTS = [
    # compressor, model, start s, end s, duration s, windows, peak score, top signals
    ("C01", "v1", 90, 180, 90.0, 4, 4.0, SIGNALS["c"]),
    ("C01", "v1", 270, 3900, 3630.0, 2, 2.9, SIGNALS["c"]),
    ("C01", "v2", 60, 60, 0.0, 1, 1.7, SIGNALS["c"]),
    ("C02", "v1", 0, 30, 30.0, 2, 2.0, SIGNALS["b"]),
]


def _detailed_rows(tables) -> pd.DataFrame:
    frames = []
    for cid, version, spec in (("C01", "v1", C01_V1), ("C01", "v2", C01_V2), ("C02", "v1", C02_V1)):
        frame = pd.DataFrame(spec, columns=["offset", "is_anomaly", "consecutive_count", "triggered", "in_alert", "score", "top"])
        frame["is_anomaly"] = frame["is_anomaly"].fillna(False).astype(bool)
        frame["window_end"] = [T0 + timedelta(seconds=s) for s in frame["offset"]]
        frame["top_features"] = frame["top"].map(SIGNALS)
        frames.append(frame.drop(columns=["offset", "top"]).assign(compressor_id=cid, model_version=version))
    rows = pd.concat(frames, ignore_index=True)
    errors = {column: 0.5 for column in tables.error_columns}
    return rows.assign(batch_id="b1", threshold=1.0, created_at=T0, **errors)


@pytest.mark.parametrize("kind", KINDS)
def test_events_view_returns_the_alert_episodes(kind, tmp_path):
    with database(kind, tmp_path) as url:
        engine, tables = make_engine(url), build_tables(Settings(db_url=url))
        try:
            create_all(engine, tables, include_source=False)
            with engine.begin() as conn:
                insert_frame(conn, tables.detailed, _detailed_rows(tables))
            dialect = "mariadb" if kind == "mariadb" else kind
            with engine.begin() as conn:
                for statement in sql_statements(SQL_DIR / dialect / "views.sql"):
                    conn.exec_driver_sql(statement)
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT compressor_id, model_version, start_time, end_time, duration_s, windows, peak_score, top_signals "
                        "FROM anomaly_events ORDER BY compressor_id, model_version, start_time"
                    )
                ).all()
        finally:
            engine.dispose()
    got = [
        (cid, version, pd.Timestamp(start), pd.Timestamp(end), float(duration), int(windows), float(peak), top)
        for cid, version, start, end, duration, windows, peak, top in rows
    ]
    expected = [
        (cid, version, pd.Timestamp(T0 + timedelta(seconds=s)), pd.Timestamp(T0 + timedelta(seconds=e)), d, n, p, top)
        for cid, version, s, e, d, n, p, top in EXPECTED_EVENTS
    ]
    assert [g[:4] + g[5:] for g in got] == [e[:4] + e[5:] for e in expected]
    assert [g[4] for g in got] == pytest.approx([e[4] for e in expected], abs=1e-3)


# ------------------------------------------------------------------ least-privilege roles
ANY_HOST = "'%%'"  # MariaDB's '%' (any host), doubled for PyMySQL's %-style parameters


def _create_login(conn: sa.Connection, kind: str, user: str) -> None:
    # Role DDL takes no bind parameters: the name is made by the test and quoted by the dialect.
    quoted = conn.dialect.identifier_preparer.quote(user)
    if kind == "postgresql":
        conn.exec_driver_sql(f"CREATE ROLE {quoted} LOGIN IN ROLE compressor_ad_scheduler")
    else:
        conn.exec_driver_sql(f"CREATE USER {quoted}@{ANY_HOST}")
        conn.exec_driver_sql(f"GRANT compressor_ad_scheduler TO {quoted}@{ANY_HOST}")
        conn.exec_driver_sql(f"SET DEFAULT ROLE compressor_ad_scheduler FOR {quoted}@{ANY_HOST}")


def _drop_login(admin_url: str, kind: str, user: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        quoted = conn.dialect.identifier_preparer.quote(user)
        conn.exec_driver_sql(f"DROP ROLE IF EXISTS {quoted}" if kind == "postgresql" else f"DROP USER IF EXISTS {quoted}@{ANY_HOST}")
    engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_scheduler_role_writes_results_and_only_reads_the_source(kind, tmp_path):
    """schema.sql, views.sql and roles.sql run as written; a login with the scheduler role then does
    a batch's reads and writes, and is refused writing the source table or changing the schema.

    The group roles compressor_ad_scheduler/_analyst are server-wide and stay (roles.sql creates
    them only when missing); the login made here is dropped."""
    admin_url = require_server(kind)
    user = f"test_sched_{uuid.uuid4().hex[:10]}"
    try:
        _check_scheduler_role(admin_url, kind, user)
    finally:
        _drop_login(admin_url, kind, user)


def _check_scheduler_role(admin_url: str, kind: str, user: str) -> None:
    settings = Settings()
    tables = build_tables(settings)
    with scratch_database(admin_url, "test") as url:
        owner = make_engine(url)
        try:
            with owner.begin() as conn:
                for name in ("schema.sql", "views.sql", "roles.sql"):
                    for statement in sql_statements(SQL_DIR / kind / name):
                        conn.exec_driver_sql(statement)
                _create_login(conn, kind, user)
            telemetry = pd.DataFrame({"timestamp": [T0 + timedelta(seconds=30 * i) for i in range(40)], "compressor_id": "C01"})
            for feature in settings.data.features:
                telemetry[feature] = 1.0
            write_telemetry(owner, tables, telemetry)
        finally:
            owner.dispose()
        scheduler = make_engine(sa.make_url(url).set(username=user, password=None))
        try:
            with scheduler.begin() as conn:
                assert len(read_rows(conn, tables, settings, "C01")) == 40
                insert_frame(conn, tables.detailed, _detailed_rows(tables))
                insert_frame(conn, tables.results, pd.DataFrame({"compressor_id": ["C01"], "timestamp": [T0], "model_version": ["v1"], "score": [0.1], "is_anomaly": [False]}))
                delete_window_range(conn, tables, "C01", "v2", T0, T0 + timedelta(hours=2))
                save_checkpoint(conn, tables, Checkpoint("C01", T0, 0, "v1"))
                save_checkpoint(conn, tables, Checkpoint("C01", T0 + timedelta(minutes=1), 2, "v1"))
                replace_day_counts(conn, tables, "C01", {T0: 40}, T0 + timedelta(minutes=20), None)
                replace_day_counts(conn, tables, "C01", {T0: 40}, T0 + timedelta(minutes=30), T0)
            with scheduler.connect() as conn:
                assert read_checkpoint(conn, tables, "C01").consecutive_count == 2
                assert counted(conn, tables, "C01") == (40, T0 + timedelta(minutes=30))
                assert conn.execute(sa.select(sa.func.count()).select_from(tables.detailed)).scalar_one() == len(C01_V1) + len(C02_V1)
                with pytest.raises(sa.exc.DBAPIError, match="(?i)denied"):
                    conn.execute(sa.text("SELECT * FROM anomaly_events"))  # the analysts' view is not the scheduler's
            with pytest.raises(sa.exc.DBAPIError, match="(?i)denied"):
                with scheduler.begin() as conn:
                    insert_frame(conn, tables.source, telemetry.iloc[:1])
            with pytest.raises(sa.exc.DBAPIError, match="(?i)denied|must be owner"):
                with scheduler.begin() as conn:
                    conn.execute(sa.schema.DropTable(tables.results))
        finally:
            scheduler.dispose()
