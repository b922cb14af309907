"""SQL Server syntax without a server: the schema and every statement a pipeline run issues, compiled
with SQLAlchemy's mssql dialect (T-SQL: TOP instead of LIMIT, BIT comparisons, DATETIME2, NVARCHAR)."""
from __future__ import annotations

from datetime import timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mssql
from sqlalchemy.schema import CreateIndex, CreateTable

from db import bulk
from db.engine import make_engine
from db.schema import build_tables, create_all
from db.source import write_telemetry
from scheduler.runner import Runner
from scheduler.status import fleet_status

DIALECT = mssql.dialect(paramstyle="qmark")  # as with pyodbc


def _tsql(statement) -> str:
    return str(statement.compile(dialect=DIALECT))


def test_schema_compiles_to_sql_server_types(settings):
    tables = build_tables(settings)
    detailed = _tsql(CreateTable(tables.detailed))
    for fragment in ("id BIGINT NOT NULL IDENTITY", "window_end DATETIME2 NOT NULL", "compressor_id NVARCHAR(64) NOT NULL",
                     "score FLOAT(53) NOT NULL", "is_anomaly BIT NOT NULL", "top_features NVARCHAR(200) NULL",
                     "CONSTRAINT uq_detailed_window UNIQUE (compressor_id, window_end, model_version)"):
        assert fragment in detailed
    for table in (tables.source, *tables.result_tables):
        text = _tsql(CreateTable(table))
        assert "DOUBLE" not in text and "BOOLEAN" not in text and "TIMESTAMP" not in text.replace("timestamp", "")
        for index in table.indexes:
            assert _tsql(CreateIndex(index)).startswith(f"CREATE INDEX {index.name} ON {table.name} (")


def test_every_statement_of_a_pipeline_run_compiles_for_sql_server(trained_fleet, tmp_path):
    """Live run, backfill, status and leases on SQLite, with every statement captured and compiled for SQL Server."""
    settings = trained_fleet["settings"].replace(db_url=f"sqlite:///{tmp_path / 'capture.sqlite'}")
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    create_all(engine, tables)
    write_telemetry(engine, tables, trained_fleet["fleet"].telemetry)
    captured: list = []
    sa.event.listen(engine, "before_execute", lambda conn, statement, *rest: captured.append(statement))
    runner = Runner(settings, engine, trained_fleet["bundle"])
    assert runner.run_once().ok
    end = trained_fleet["train_end"]
    assert runner.backfill(end - timedelta(hours=2), end + timedelta(hours=1)).ok
    assert fleet_status(engine, tables, settings)
    sample = pd.DataFrame({"compressor_id": ["C01"], "timestamp": [end], "model_version": ["v"], "score": [0.5], "is_anomaly": [True]})
    with engine.begin() as conn:  # the insert path SQL Server takes (SQLAlchemy executemany, fast_executemany on pyodbc)
        bulk.execute_records(conn, tables.results, sample)
    engine.dispose()

    statements = [s for s in captured if isinstance(s, sa.sql.ClauseElement)]
    compiled = [_tsql(s) for s in statements]
    assert all("LIMIT" not in text for text in compiled)
    kinds = {type(s).__name__ for s in statements}
    assert {"Select", "Insert", "Update", "Delete"} <= kinds
    source, detailed, checkpoint = tables.source.name, tables.detailed.name, tables.checkpoint.name
    # read_rows: the needed columns of one compressor and time range, in time order
    assert any(t.startswith("SELECT compressor_telemetry.timestamp, compressor_telemetry.filter_dp") and "WHERE compressor_telemetry.compressor_id = ?" in t
               and "compressor_telemetry.timestamp > ?" in t and t.endswith(f"ORDER BY {source}.timestamp") for t in compiled)
    # nth_timestamp_before: where the window context starts (the n-th latest distinct timestamp), paged with ROW_NUMBER
    assert any(f"ROW_NUMBER() OVER (ORDER BY {source}.timestamp DESC)" in t and f"GROUP BY {source}.timestamp" in t for t in compiled)
    assert any(t.startswith("SELECT count(*) AS count_1") for t in compiled)
    # rows_per_day: source rows per UTC day, for the late-row counts
    assert any(f"GROUP BY CAST({source}.timestamp AS DATE)" in t for t in compiled)
    # inserts: a batch summary, and result rows the way insert_frame sends them to SQL Server
    assert any(t.startswith(f"INSERT INTO {tables.summary.name} (batch_id, compressor_id, mode,") for t in compiled)
    assert any(t.startswith(f"INSERT INTO {tables.results.name} (") and "compressor_id, timestamp, model_version, score, is_anomaly" in t and ") VALUES (?," in t for t in compiled)
    assert any(t.startswith(f"DELETE FROM {detailed} WHERE {detailed}.compressor_id = ?") for t in compiled)
    assert any(t.startswith(f"UPDATE {checkpoint} SET last_timestamp=?") for t in compiled)  # checkpoint
    assert any(t.startswith(f"UPDATE {checkpoint} SET lease_owner=?, lease_expires_at=?") for t in compiled)  # lease
