"""Reading telemetry from the source table: only the needed columns and rows, streamed in chunks
(PostgreSQL: COPY TO in CSV, parsed by pandas; see db/pgcopy.py)."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from core.errors import DataValidationError
from core.settings import Settings
from db import pgcopy
from db.ids import exact_ids
from db.schema import Tables


def check_source_columns(conn: sa.Connection, tables: Tables, settings: Settings) -> None:
    """Raise DataValidationError naming the source table's missing columns."""
    inspector = sa.inspect(conn)
    name = tables.source.name
    if not inspector.has_table(name):
        raise DataValidationError(f"source table {name!r} does not exist")
    present = {c["name"].lower() for c in inspector.get_columns(name)}
    optional = {settings.source.label_column} if settings.source.label_column else set()
    missing = [c.name for c in tables.source.columns if c.name.lower() not in present and c.name not in optional]
    if missing:
        raise DataValidationError(f"source table {name!r} lacks column(s): {', '.join(missing)}")


def list_compressors(conn: sa.Connection, tables: Tables, settings: Settings) -> list[str]:
    """Distinct compressor ids in the source table, byte for byte, sorted (db/ids.py)."""
    return exact_ids(conn, tables, settings)


class valid_time(FunctionElement):
    """True where a timestamp column holds a timestamp. NULL never does; on SQLite (typeless columns) a
    value must also be text that reads as a date and time: other rows are counted (`bad_timestamps`), never read."""

    type = sa.Boolean()
    name = "valid_time"
    inherit_cache = True


@compiles(valid_time)
def _not_null(element, compiler, **kw) -> str:
    return f"({compiler.process(element.clauses, **kw)} IS NOT NULL)"


@compiles(valid_time, "sqlite")
def _sqlite_time_text(element, compiler, **kw) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"(typeof({column}) = 'text' AND julianday({column}) IS NOT NULL)"


def _of_compressor(tables: Tables, settings: Settings, compressor_id: str) -> sa.ColumnElement:
    """The rows of one compressor that have a valid timestamp."""
    src = settings.source
    return sa.and_(tables.source.c[src.compressor_column] == compressor_id, valid_time(tables.source.c[src.timestamp_column]))


def bad_timestamps(conn: sa.Connection, tables: Tables, settings: Settings, compressor_id: str) -> int:
    """Rows of one compressor whose timestamp is NULL or (SQLite) not a date and time: never read, only counted."""
    src = settings.source
    stmt = sa.select(sa.func.count()).select_from(tables.source).where(
        tables.source.c[src.compressor_column] == compressor_id, sa.not_(valid_time(tables.source.c[src.timestamp_column]))
    )
    return int(conn.execute(stmt).scalar_one())


def _columns(tables: Tables, settings: Settings, with_label: bool) -> list[sa.Column]:
    src = settings.source
    names = [src.timestamp_column, *settings.data.features]
    if with_label and src.label_column:
        names.append(src.label_column)
    return [tables.source.c[n] for n in names]


def read_rows(
    conn: sa.Connection,
    tables: Tables,
    settings: Settings,
    compressor_id: str,
    after: datetime | None = None,
    until: datetime | None = None,
    with_label: bool = False,
    limit: int | None = None,
) -> pd.DataFrame:
    """Rows of one compressor with after < timestamp <= until, in time order (the first `limit`), fetched in chunks."""
    src = settings.source
    ts = tables.source.c[src.timestamp_column]
    stmt = sa.select(*_columns(tables, settings, with_label)).where(_of_compressor(tables, settings, compressor_id))
    if after is not None:
        stmt = stmt.where(ts > after)
    if until is not None:
        stmt = stmt.where(ts <= until)
    stmt = stmt.order_by(ts)
    if limit is not None:
        stmt = stmt.limit(limit)
    columns = _columns(tables, settings, with_label)
    chunk_rows = settings.scheduler.read_chunk_rows
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        parts = [_parse_times(part, columns) for part in pgcopy.read_frames(conn, stmt, chunk_rows)]
    else:
        # Per-statement option: Connection.execution_options() would stream every later statement too.
        result = conn.execute(stmt, execution_options={"yield_per": chunk_rows})
        parts = [_frame(chunk, columns) for chunk in result.partitions()]
    if not parts:
        return _frame([], columns)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _parse_times(frame: pd.DataFrame, columns: list[sa.Column]) -> pd.DataFrame:
    """ISO text of date/time columns to naive UTC datetime64 (values with an offset are converted)."""
    for column in columns:
        if isinstance(column.type, sa.DateTime):
            parsed = pd.to_datetime(frame[column.name], format="ISO8601", utc=True, errors="coerce")
            frame[column.name] = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    return frame


def _frame(rows: list, columns: list[sa.Column]) -> pd.DataFrame:
    """Rows to a frame built column by column: floats and timestamps straight into numpy arrays.

    A column whose values do not convert (text in a number column, say) stays as objects, for
    validation to count and set aside.
    """
    data = {}
    for column, values in zip(columns, zip(*rows) if rows else [()] * len(columns)):
        try:
            if isinstance(column.type, sa.Float):
                data[column.name] = np.array(values, dtype=np.float64)
            elif isinstance(column.type, sa.DateTime):
                data[column.name] = _times(values)
            else:
                data[column.name] = pd.array(values)
        except (TypeError, ValueError):
            data[column.name] = np.array(values, dtype=object)
    return pd.DataFrame(data, columns=[c.name for c in columns])


def _times(values: tuple) -> np.ndarray:
    """datetime64 values, naive UTC (time-zone aware values, from a timestamptz column say, are converted)."""
    first = next((v for v in values if v is not None), None)
    if isinstance(first, datetime) and first.tzinfo is not None:
        return pd.to_datetime(list(values), utc=True).tz_localize(None).to_numpy()
    return np.array(values, dtype="datetime64[us]")


def span(
    conn: sa.Connection, tables: Tables, settings: Settings, compressor_id: str, after: datetime | None, until: datetime | None = None
) -> tuple[int, datetime | None, datetime | None]:
    """(row count, first, last timestamp) of one compressor's rows with after < timestamp <= until."""
    src = settings.source
    ts = tables.source.c[src.timestamp_column]
    stmt = sa.select(sa.func.count(), sa.func.min(ts), sa.func.max(ts)).where(_of_compressor(tables, settings, compressor_id))
    if after is not None:
        stmt = stmt.where(ts > after)
    if until is not None:
        stmt = stmt.where(ts <= until)
    count, first, last = conn.execute(stmt).one()
    return int(count), first, last


def nth_timestamp_before(
    conn: sa.Connection, tables: Tables, settings: Settings, compressor_id: str, at_or_before: datetime, n: int
) -> datetime | None:
    """The n-th latest distinct timestamp at or before a time (None when there are fewer): where window context starts."""
    src = settings.source
    ts = tables.source.c[src.timestamp_column]
    stmt = (
        sa.select(ts)
        .where(_of_compressor(tables, settings, compressor_id), ts <= at_or_before)
        .group_by(ts)
        .order_by(ts.desc())
        .offset(n - 1)
        .limit(1)
    )
    return conn.execute(stmt).scalar()


class utc_day(FunctionElement):
    """The calendar day of a (naive UTC) timestamp column, as a date."""

    type = sa.Date()
    name = "utc_day"
    inherit_cache = True


@compiles(utc_day)
def _cast_to_date(element, compiler, **kw) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS DATE)"


@compiles(utc_day, "sqlite")
def _sqlite_date(element, compiler, **kw) -> str:
    return f"date({compiler.process(element.clauses, **kw)})"


def rows_per_day(
    conn: sa.Connection, tables: Tables, settings: Settings, compressor_id: str, since: datetime | None, until: datetime
) -> dict[datetime, int]:
    """Row count per UTC day (keyed by its midnight) of one compressor's rows with since <= timestamp <= until."""
    src = settings.source
    ts = tables.source.c[src.timestamp_column]
    day = utc_day(ts)
    stmt = sa.select(day, sa.func.count()).where(_of_compressor(tables, settings, compressor_id), ts <= until)
    if since is not None:
        stmt = stmt.where(ts >= since)
    rows = conn.execute(stmt.group_by(day)).all()
    return {pd.Timestamp(d).to_pydatetime(): int(n) for d, n in rows}


def count_rows_after(
    conn: sa.Connection, tables: Tables, settings: Settings, compressor_id: str, after: datetime | None, until: datetime | None = None
) -> int:
    """Rows with after < timestamp <= until (rows waiting after a checkpoint, say)."""
    src = settings.source
    stmt = sa.select(sa.func.count()).select_from(tables.source).where(_of_compressor(tables, settings, compressor_id))
    if after is not None:
        stmt = stmt.where(tables.source.c[src.timestamp_column] > after)
    if until is not None:
        stmt = stmt.where(tables.source.c[src.timestamp_column] <= until)
    return int(conn.execute(stmt).scalar_one())


def write_telemetry(engine: sa.Engine, tables: Tables, frame: pd.DataFrame, chunk_rows: int = 50_000, progress=None) -> int:
    """Append telemetry rows (columns named as in the source table) in one transaction."""
    from db.results import insert_frame

    columns = [c.name for c in tables.source.columns if c.name in frame.columns]
    written = 0
    with engine.begin() as conn:
        for start in range(0, len(frame), chunk_rows):
            written += insert_frame(conn, tables.source, frame.iloc[start : start + chunk_rows][columns])
            if progress:
                progress(written, len(frame))
    return written


def write_new_telemetry(conn: sa.Connection, tables: Tables, settings: Settings, frame: pd.DataFrame) -> tuple[int, int]:
    """Insert the frame's rows whose (compressor, timestamp) is not yet stored, in the caller's transaction.

    Returns (written, already stored). Idempotent: writing the same rows again writes none, so
    a collector that resends after a reconnect or a restart never duplicates a row. The
    timestamps must be naive UTC; rows repeated inside the frame are written once.
    """
    from db.results import insert_frame

    src = settings.source
    if frame.empty:
        return 0, 0
    frame = frame.drop_duplicates([src.compressor_column, src.timestamp_column], keep="last")
    ts, cid = tables.source.c[src.timestamp_column], tables.source.c[src.compressor_column]
    stored: set[tuple[str, np.datetime64]] = set()
    for compressor, rows in frame.groupby(src.compressor_column, sort=False):
        times = rows[src.timestamp_column]
        existing = conn.execute(sa.select(ts).where(cid == compressor, ts >= times.min(), ts <= times.max())).scalars()
        stored.update((compressor, np.datetime64(t, "us")) for t in _times(tuple(existing)))
    keys = zip(frame[src.compressor_column], frame[src.timestamp_column].to_numpy(dtype="datetime64[us]"))
    new = np.array([key not in stored for key in keys], dtype=bool)
    columns = [c.name for c in tables.source.columns if c.name in frame.columns]
    written = insert_frame(conn, tables.source, frame.loc[new, columns])
    return written, int((~new).sum())
