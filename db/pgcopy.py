"""PostgreSQL COPY through psycopg 3, in both directions, without per-value Python work.

Writing (binary COPY FROM): a DataFrame is encoded column by column with numpy. Rows whose NULLs
and text lengths fall in the same pattern share one fixed record layout, so each pattern becomes
one numpy structured array written out with `tobytes()`; rows are therefore sent grouped by
pattern (their order within one call is not kept). A text column of many different lengths (an
alarm state, say) is left out of the pattern: its values are joined in between the fixed parts
of each row, so a frame never splits into hundreds of small patterns.

Reading (COPY (SELECT ...) TO STDOUT, CSV): pandas' C parser reads the rows, one chunk at a time.
"""
from __future__ import annotations

import io
import struct

import numpy as np
import pandas as pd
import sqlalchemy as sa

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_PG_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")
_FORMATS = {"float8": ">f8", "float4": ">f4", "int8": ">i8", "int4": ">i4", "int2": ">i2", "bool": "u1", "timestamp": ">i8"}
_INT_RANGES = {"int2": 2**15, "int4": 2**31, "int8": 2**63}
_PATTERN_LENGTHS = 8  # a text column with more distinct lengths is joined row by row, not made part of the pattern
_NULL = struct.pack(">i", -1)


def binary_kind(column: sa.Column, dialect: sa.Dialect) -> str | None:
    """How a column travels in binary COPY ('float8', 'text', ...); None when not supported here."""
    kind = column.type.dialect_impl(dialect)
    if isinstance(kind, sa.Boolean):
        return "bool"
    if isinstance(kind, sa.SmallInteger):
        return "int2"
    if isinstance(kind, sa.BigInteger):
        return "int8"
    if isinstance(kind, sa.Integer):
        return "int4"
    if isinstance(kind, sa.Float):
        real = isinstance(kind, sa.REAL) or (kind.precision is not None and kind.precision <= 24)
        return "float4" if real else "float8"
    if isinstance(kind, sa.DateTime):
        return "timestamp"
    if isinstance(kind, sa.String):
        return "text"
    return None


def _timestamps(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Microseconds since 2000-01-01 (naive UTC; aware values converted to UTC) and the NULL mask."""
    times = series if pd.api.types.is_datetime64_any_dtype(series) else pd.to_datetime(series)
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    values = times.to_numpy(dtype="datetime64[us]")
    null = np.isnat(values)
    return np.where(null, _PG_EPOCH, values) - _PG_EPOCH, null


def _numbers(series: pd.Series, kind: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of a numeric or boolean column and its NULL mask (NaN is NULL)."""
    null = series.isna().to_numpy()
    if kind == "bool":
        return series.where(~null, False).to_numpy(dtype=bool), null
    if kind.startswith("float"):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return values, null | np.isnan(values)
    filled = series.where(~null, 0)
    values = filled.to_numpy(dtype=np.int64) if pd.api.types.is_integer_dtype(filled) else filled.to_numpy(dtype=np.float64)
    if values.dtype.kind == "f" and not np.array_equal(values, np.trunc(values)):
        raise ValueError(f"column {name!r} holds non-integer values for an integer column")
    limit = _INT_RANGES[kind]
    if len(values) and (values.min() < -limit or values.max() >= limit):
        raise ValueError(f"column {name!r} holds values out of range for {kind}")
    return values.astype(np.int64), null


def _texts(series: pd.Series, encoding: str) -> tuple[np.ndarray, list[bytes], np.ndarray]:
    """Codes into the distinct encoded values, those values, and each row's byte length (-1: NULL)."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    encoded = [str(u).encode(encoding) for u in uniques.tolist()]
    lengths = np.array([len(b) for b in encoded] + [-1], dtype=np.int64)
    return codes, encoded, lengths[codes]


def encode_rows(frame: pd.DataFrame, kinds: list[str], encoding: str = "utf-8") -> bytes:
    """The rows of a frame in COPY binary form (the stream starts with HEADER and ends with TRAILER)."""
    fields, keys = [], []
    for name, kind in zip(frame.columns, kinds):
        series = frame[name]
        if kind == "text":
            codes, encoded, lengths = _texts(series, encoding)
            if len(np.unique(lengths)) > _PATTERN_LENGTHS:
                fields.append(("varying", codes, [struct.pack(">i", len(b)) + b for b in encoded] + [_NULL], None))
            else:
                fields.append((kind, codes, encoded, lengths))
                keys.append(lengths)
        else:
            values, null = _timestamps(series) if kind == "timestamp" else _numbers(series, kind, name)
            fields.append((kind, values, null, None))
            keys.append(np.where(null, -1, 0))
    if len(frame) == 0:
        return b""
    pattern, groups = _patterns(keys, len(frame))
    return b"".join(_encode_group(fields, np.flatnonzero(pattern == group)) for group in range(groups))


def _patterns(keys: list[np.ndarray], rows: int) -> tuple[np.ndarray, int]:
    """Group number of each row by its tuple of keys (hash-based, linear time), and the group count."""
    pattern, groups = np.zeros(rows, dtype=np.int64), 1
    for key in keys:
        codes, distinct = pd.factorize(key)
        if len(distinct) > 1:
            pattern, distinct = pd.factorize(pattern * len(distinct) + codes)
            groups = len(distinct)
    return pattern, groups


def _encode_group(fields: list, rows: np.ndarray) -> bytes:
    """Rows that share one NULL/length pattern: the fixed fields as structured arrays, each varying
    text field's values (with their lengths) joined in between, row by row."""
    parts: list[list[bytes]] = []
    names, formats, fills = ["n"], [">i2"], [len(fields)]

    def close_fixed() -> None:
        if names:
            records = np.empty(len(rows), dtype=np.dtype({"names": names, "formats": formats}))
            for name, value in zip(names, fills):
                records[name] = value
            parts.append(records)
            names.clear(), formats.clear(), fills.clear()

    for i, (kind, first, second, lengths) in enumerate(fields):
        if kind == "varying":
            close_fixed()
            parts.append([second[c] for c in first[rows].tolist()])  # code -1 (NULL): the last entry
        elif kind == "text":
            size = int(lengths[rows[0]])
            names.append(f"l{i}"), formats.append(">i4"), fills.append(size)
            if size > 0:
                where, distinct = pd.factorize(first[rows])
                table = np.array([second[c] for c in distinct], dtype=f"S{size}")
                names.append(f"v{i}"), formats.append(f"S{size}"), fills.append(table[where])
        elif second[rows[0]]:
            names.append(f"l{i}"), formats.append(">i4"), fills.append(-1)
        else:
            fmt = _FORMATS[kind]
            names.append(f"l{i}"), formats.append(">i4"), fills.append(np.dtype(fmt).itemsize)
            names.append(f"v{i}"), formats.append(fmt), fills.append(first[rows])
    close_fixed()
    if len(parts) == 1:
        return parts[0].tobytes()
    joined: list = [None] * (len(parts) * len(rows))
    for k, part in enumerate(parts):  # row r's k-th piece at r * len(parts) + k
        joined[k :: len(parts)] = part.view(np.dtype((np.void, part.dtype.itemsize))).tolist() if isinstance(part, np.ndarray) else part
    return b"".join(joined)


def driver_error(conn: sa.Connection, exc: Exception, statement: str) -> Exception:
    """A psycopg error as SQLAlchemy raises driver errors, so retries and error reports treat it alike."""
    import psycopg

    driver = conn.connection.driver_connection
    return sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error, connection_invalidated=driver.closed, dialect=conn.dialect)


def read_frames(conn: sa.Connection, stmt: sa.Select, chunk_rows: int) -> list[pd.DataFrame]:
    """Run a SELECT as COPY (...) TO STDOUT (FORMAT csv) in the caller's transaction.

    Returns one frame per `chunk_rows` rows; date/time columns come back as ISO text (DateStyle
    ISO) for the caller to parse, floats exactly (extra_float_digits 3: shortest exact form).
    psycopg binds the parameters on the client: COPY takes no server-side parameters.
    """
    import psycopg
    from psycopg import sql

    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    names = [c.name for c in stmt.selected_columns]
    times = {c.name: str for c in stmt.selected_columns if isinstance(c.type, sa.DateTime)}
    conn.exec_driver_sql("SET LOCAL extra_float_digits = 3")
    conn.exec_driver_sql("SET LOCAL DateStyle = 'ISO'")
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(sql.SQL(str(compiled)))
    driver = conn.connection.driver_connection

    def parse(rows: list) -> pd.DataFrame:
        return pd.read_csv(io.BytesIO(b"".join(rows)), header=None, names=names, dtype=times, engine="c")

    frames, pending = [], []
    try:
        with driver.cursor() as cursor, cursor.copy(statement, compiled.params) as copy:
            for row in copy:  # one data row per block
                pending.append(row)
                if len(pending) >= chunk_rows:
                    frames.append(parse(pending))
                    pending = []
    except psycopg.Error as exc:
        raise driver_error(conn, exc, str(compiled)) from exc
    if pending:
        frames.append(parse(pending))
    return frames
