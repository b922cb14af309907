"""Bulk inserts of a DataFrame inside the caller's transaction, the fastest way each driver allows.

- PostgreSQL (psycopg 3): COPY ... (FORMAT binary) on the Connection's own DBAPI connection, so
  the rows belong to the caller's transaction;
- SQLite, MariaDB/MySQL: executemany of the compiled INSERT with plain Python rows (PyMySQL
  sends them as multi-row INSERTs);
- SQL Server and others: SQLAlchemy's executemany (fast_executemany on pyodbc, see db/engine.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

from db import pgcopy

CHUNK_ROWS = 50_000


def check_columns(table: sa.Table, frame: pd.DataFrame) -> list[sa.Column]:
    """The table's columns named by the frame; KeyError naming any the table lacks."""
    unknown = [str(c) for c in frame.columns if c not in table.c]
    if unknown:
        raise KeyError(f"table {table.name!r} has no column(s): {', '.join(unknown)}")
    return [table.c[c] for c in frame.columns]


def python_values(series: pd.Series) -> list:
    """A column as plain Python values every driver accepts (NaN/NaT/NA become None, times naive UTC)."""
    if pd.api.types.is_datetime64_any_dtype(series):
        if getattr(series.dt, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        return series.to_numpy(dtype="datetime64[us]").astype(object).tolist()
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biu":
        return series.to_numpy().tolist()
    values = series.to_numpy(dtype=object)
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()
        values[missing] = None
    return values.tolist()


def _chunks(frame: pd.DataFrame):
    for start in range(0, len(frame), CHUNK_ROWS):
        yield frame.iloc[start : start + CHUNK_ROWS]


def copy_postgresql(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> bool:
    """COPY the frame in binary form; False (nothing sent) when a column type has no encoding here."""
    import psycopg
    from psycopg import sql

    columns = check_columns(table, frame)
    kinds = [pgcopy.binary_kind(c, conn.dialect) for c in columns]
    if None in kinds:
        return False
    target = sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        target, sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    )
    driver = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(pgcopy.HEADER)
            for chunk in _chunks(frame):
                copy.write(pgcopy.encode_rows(chunk, kinds, driver.info.encoding))
            copy.write(pgcopy.TRAILER)
    except psycopg.Error as exc:
        raise pgcopy.driver_error(conn, exc, statement.as_string(driver)) from exc
    return True


def executemany_rows(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """Executemany of the INSERT compiled for this dialect, with rows built column by column.

    Values go through the column types' bind processors only where the driver needs them
    (date/time types), so they are stored exactly as SQLAlchemy itself would store them.
    """
    columns = check_columns(table, frame)
    compiled = sa.insert(table).compile(dialect=conn.dialect, column_keys=[c.name for c in columns])
    names = list(compiled.positiontup) if compiled.positiontup else [c.name for c in columns]
    processors = [_time_processor(table.c[name], conn.dialect) for name in names]
    for chunk in _chunks(frame):
        values = []
        for name, process in zip(names, processors):
            values.append(python_values(chunk[name]) if process is None else _processed(chunk[name], process))
        rows = list(zip(*values))
        params = rows if conn.dialect.positional else [dict(zip(names, row)) for row in rows]
        conn.exec_driver_sql(str(compiled), params)


def _processed(series: pd.Series, process) -> list:
    """A bind processor applied once per distinct value (results repeat cheaply)."""
    codes, distinct = pd.factorize(series)
    done = np.array([process(v) for v in python_values(pd.Series(distinct))] + [None], dtype=object)
    return done[codes].tolist()


def _time_processor(column: sa.Column, dialect: sa.Dialect):
    """The bind processor of a date/time column (SQLite stores them as text), else None."""
    impl = column.type.dialect_impl(dialect)
    return impl.bind_processor(dialect) if isinstance(impl, (sa.DateTime, sa.Date, sa.Time)) else None


def execute_records(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """SQLAlchemy's own executemany with dict rows, one chunk at a time."""
    check_columns(table, frame)
    for chunk in _chunks(frame):
        columns = {name: python_values(chunk[name]) for name in chunk.columns}
        conn.execute(sa.insert(table), [dict(zip(columns, row)) for row in zip(*columns.values())])
