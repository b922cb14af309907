"""The full pipeline, the events view and the roles on a real SQL Server started in a container.

Runs where a Docker engine answers (testcontainers starts mcr.microsoft.com/mssql/server; set
COMPRESSOR_AD_TEST_MSSQL_IMAGE for another image) and is skipped, with the reason, where none
does. Without a server, tests/test_mssql_compile.py still compiles every statement for SQL Server.
The connection goes through pyodbc with ODBC Driver 18 when installed, else FreeTDS.
"""
from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from core.settings import Settings
from db.engine import make_engine
from db.results import insert_frame
from db.schema import build_tables
from db.scratch import scratch_database
from db_servers import sql_statements
from pipeline_flow import check_pipeline, train_once
from test_sql_files import EXPECTED_EVENTS, SQL_DIR, T0, _detailed_rows

IMAGE = os.environ.get("COMPRESSOR_AD_TEST_MSSQL_IMAGE", "mcr.microsoft.com/mssql/server:2022-latest")


def _docker_missing() -> str | None:
    """Why no container can be started here, or None when a Docker engine answers."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - any reason means no engine
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return None


MISSING = _docker_missing()
pytestmark = pytest.mark.skipif(
    MISSING is not None, reason=f"no Docker engine to start SQL Server in ({MISSING}); tests/test_mssql_compile.py checks the SQL without one"
)


def _server_url(container) -> sa.URL:
    import pyodbc

    drivers = pyodbc.drivers()
    host, port = container.get_container_host_ip(), int(container.get_exposed_port(1433))
    if "ODBC Driver 18 for SQL Server" in drivers:
        query = {"driver": "ODBC Driver 18 for SQL Server", "TrustServerCertificate": "yes"}
        return sa.URL.create("mssql+pyodbc", "SA", container.password, host, port, "master", query)
    if "FreeTDS" in drivers:
        query = {"driver": "FreeTDS", "Port": str(port), "TDS_Version": "7.4"}
        return sa.URL.create("mssql+pyodbc", "SA", container.password, host, None, "master", query)
    pytest.fail(f"no SQL Server ODBC driver (have {drivers}): install ODBC Driver 18, or FreeTDS with `make system-deps`")


@pytest.fixture(scope="module")
def server_url():
    from testcontainers.community.mssql import SqlServerContainer

    password = f"Ca{uuid.uuid4().hex[:12]}!9"
    with SqlServerContainer(IMAGE, password=password) as container:
        yield _server_url(container).render_as_string(hide_password=False)


def test_full_pipeline_on_sql_server(server_url, tmp_path_factory, capsys):
    trained = train_once(tmp_path_factory.mktemp("trained"))
    with scratch_database(server_url, "test") as url:
        check_pipeline(url, trained, capsys)


def test_schema_views_and_roles_on_sql_server(server_url):
    with scratch_database(server_url, "test") as url:
        engine = make_engine(url)
        tables = build_tables(Settings())
        try:
            with engine.begin() as conn:
                for statement in sql_statements(SQL_DIR / "mssql" / "schema.sql"):
                    conn.exec_driver_sql(statement)
            with engine.begin() as conn:
                insert_frame(conn, tables.detailed, _detailed_rows(tables))
            for name in ("views.sql", "roles.sql"):
                for statement in sql_statements(SQL_DIR / "mssql" / name):
                    with engine.begin() as conn:
                        conn.exec_driver_sql(statement)
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT compressor_id, model_version, start_time, end_time, windows, peak_score, top_signals FROM anomaly_events ORDER BY compressor_id, model_version, start_time")
                ).all()
        finally:
            engine.dispose()
    expected = [
        (cid, version, pd.Timestamp(T0 + timedelta(seconds=s)), pd.Timestamp(T0 + timedelta(seconds=e)), n, p, top)
        for cid, version, s, e, _, n, p, top in EXPECTED_EVENTS
    ]
    assert [(c, v, pd.Timestamp(s), pd.Timestamp(e), int(n), float(p), t) for c, v, s, e, n, p, t in rows] == expected
