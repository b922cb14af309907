"""CSV telemetry into the source table: the whole file is checked first, then written in one transaction.

Column mapping: the timestamp column, the compressor id (a column or one id for the whole file),
one column per signal named as the signal, and optionally a 0/1 label column. Other columns are
ignored. Timestamps are ISO 8601; a time-zone offset is converted to UTC, a naive time is taken
as UTC. An empty signal cell is stored as a missing value (the pipeline's validation rules handle
it); any other cell must be a finite number.
"""
from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.errors import DataValidationError
from core.logs import clip
from core.settings import Settings
from core.timerange import RANGE_TEXT, in_range
from db.schema import Tables, create_all
from db.source import write_telemetry

log = logging.getLogger(__name__)
MAX_ID_LENGTH = 64
MAX_CELL_CHARS = 60  # a bad cell is quoted in the error up to this length


@dataclass(frozen=True)
class CsvMapping:
    """Which CSV columns feed which source-table columns."""

    timestamp_col: str
    compressor_col: str | None = None
    compressor_id: str | None = None
    label_col: str | None = None
    sep: str = ","

    def check(self) -> None:
        if (self.compressor_col is None) == (self.compressor_id is None):
            raise DataValidationError("give exactly one of --compressor-col (a column of ids) and --compressor-id (one id for the whole file)")
        problem = None if self.compressor_id is None else id_problem(self.compressor_id.strip())
        if problem:
            raise DataValidationError(f"--compressor-id {_cell(self.compressor_id)} {problem}")
        if not self.sep:
            raise DataValidationError("--sep must not be empty")


def _cell(value: str) -> str:
    """A bad cell for a one-line error: quoted, clipped, control characters escaped by repr."""
    return repr(clip(value, MAX_CELL_CHARS))


def id_problem(value: str) -> str | None:
    """Why `value` cannot be a compressor id (None when it can): 1 to MAX_ID_LENGTH printable characters."""
    if not 0 < len(value) <= MAX_ID_LENGTH:
        return f"must be 1 to {MAX_ID_LENGTH} characters"
    if not value.isprintable():
        return "must contain printable characters only (no newline, tab or control character)"
    return None


def _line(position: int) -> int:
    """File line of a data row (line 1 is the header)."""
    return position + 2


def _read(path: Path, sep: str) -> pd.DataFrame:
    """Every cell as text (nothing guessed), or DataValidationError for an unreadable or empty file."""
    if not path.is_file():
        raise DataValidationError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig", quoting=csv.QUOTE_MINIMAL)
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataValidationError(f"{path}: not a readable CSV with separator {sep!r}: {str(exc).strip().splitlines()[-1]}") from None
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if frame.empty:
        raise DataValidationError(f"{path}: no data rows below the header")
    _check_row_widths(path, sep, len(frame.columns))
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


_MAX_FIELD_CHARS = 2**31 - 1


def _check_row_widths(path: Path, sep: str, width: int) -> None:
    """Every non-blank row has as many fields as the header (a short row is not padded with empty cells)."""
    if len(sep) != 1:
        return  # a multi-character separator is a pattern: pandas already refuses rows it cannot split
    csv.field_size_limit(_MAX_FIELD_CHARS)  # pandas read the file whatever its cell sizes: so does this check
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=sep)
        next(reader, None)
        try:
            for row in reader:
                if row and len(row) < width:
                    raise DataValidationError(f"{path}: line {reader.line_num}: {len(row)} field(s), the header has {width}")
        except csv.Error as exc:
            raise DataValidationError(f"{path}: line {reader.line_num}: not a readable CSV row ({exc})") from None


def _check_columns(path: Path, frame: pd.DataFrame, mapping: CsvMapping, features: tuple[str, ...], sep: str) -> None:
    wanted = [mapping.timestamp_col, mapping.compressor_col, *features, mapping.label_col]
    missing = [c for c in wanted if c is not None and c not in frame.columns]
    if missing:
        hint = f" (the header was read as one column: is --sep {sep!r} right?)" if len(frame.columns) == 1 else ""
        raise DataValidationError(f"{path}: missing column(s): {', '.join(missing)}{hint}")


def _timestamps(path: Path, text: pd.Series, column: str) -> pd.Series:
    parsed = pd.to_datetime(text.str.strip(), errors="coerce", format="ISO8601", utc=True)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        raise DataValidationError(
            f"{path}: column {column!r}, line {_line(bad[0])}: {_cell(text.iloc[bad[0]])} is not an ISO 8601 timestamp ({len(bad)} such row(s))"
        )
    naive = parsed.dt.tz_localize(None)
    outside = np.flatnonzero(~in_range(naive))
    if len(outside):
        raise DataValidationError(
            f"{path}: column {column!r}, line {_line(outside[0])}: {text.iloc[outside[0]]!r} is outside the supported range {RANGE_TEXT} "
            f"({len(outside)} such row(s))"
        )
    return naive.astype("datetime64[us]")


def _numbers(path: Path, text: pd.Series, column: str) -> np.ndarray:
    stripped = text.str.strip()
    values = pd.to_numeric(stripped.where(stripped != ""), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero((stripped != "").to_numpy() & ~np.isfinite(values))
    if len(bad):
        raise DataValidationError(f"{path}: column {column!r}, line {_line(bad[0])}: {_cell(text.iloc[bad[0]])} is not a finite number ({len(bad)} such row(s))")
    return values


def _labels(path: Path, text: pd.Series, column: str) -> np.ndarray:
    values = pd.to_numeric(text.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isin(values, (0.0, 1.0)))
    if len(bad):
        raise DataValidationError(f"{path}: column {column!r}, line {_line(bad[0])}: {_cell(text.iloc[bad[0]])} is not a 0/1 label ({len(bad)} such row(s))")
    return values.astype(np.int16)


def _compressor_ids(path: Path, text: pd.Series, column: str) -> pd.Series:
    ids = text.str.strip()
    lengths = ids.str.len().to_numpy()
    printable = {value: value.isprintable() for value in ids.unique()}
    bad = np.flatnonzero((lengths == 0) | (lengths > MAX_ID_LENGTH) | ~ids.map(printable).to_numpy(dtype=bool))
    if len(bad):
        raise DataValidationError(
            f"{path}: column {column!r}, line {_line(bad[0])}: {_cell(text.iloc[bad[0]])} is not a compressor id: {id_problem(ids.iloc[bad[0]])}"
        )
    return ids


def parse_csv(path: Path, settings: Settings, mapping: CsvMapping) -> pd.DataFrame:
    """The file as source-table rows (columns named as in the table); DataValidationError names the first problem."""
    mapping.check()
    path = Path(path)
    src = settings.source
    if mapping.label_col and not src.label_column:
        raise DataValidationError("--label-col needs a configured label column ([source] label_column)")
    raw = _read(path, mapping.sep)
    features = settings.data.features
    _check_columns(path, raw, mapping, features, mapping.sep)
    rows = {src.timestamp_column: _timestamps(path, raw[mapping.timestamp_col], mapping.timestamp_col)}
    if mapping.compressor_col:
        rows[src.compressor_column] = _compressor_ids(path, raw[mapping.compressor_col], mapping.compressor_col)
    else:
        rows[src.compressor_column] = pd.Series(mapping.compressor_id.strip(), index=raw.index)
    for feature in features:
        rows[feature] = _numbers(path, raw[feature], feature)
    if mapping.label_col:
        rows[src.label_column] = _labels(path, raw[mapping.label_col], mapping.label_col)
    return pd.DataFrame(rows)


def _drop(engine: sa.Engine, created: list[sa.Table]) -> None:
    """Drop tables this import created (MariaDB and MySQL cannot roll DDL back)."""
    for table in reversed(created):
        table.drop(engine, checkfirst=True)
    if created:
        log.info("import-csv: dropped the table(s) it had created: %s", ", ".join(t.name for t in created))


def _check_table(engine: sa.Engine, tables: Tables, columns: list[str]) -> list[sa.Table]:
    """Create the source table when missing (returns the tables created); otherwise it must have every column to be written.

    A creation that fails half way (a table without its index, say) drops what it made.
    """
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        before = set(inspector.get_table_names())
        exists = tables.source.name in before
        present = {c["name"].lower() for c in inspector.get_columns(tables.source.name)} if exists else set()
    if not exists:
        wanted = [tables.source, *tables.result_tables]
        try:
            create_all(engine, tables)
        except sa.exc.SQLAlchemyError:
            with engine.connect() as conn:
                now = set(sa.inspect(conn).get_table_names())
            _drop(engine, [t for t in wanted if t.name in now - before])
            raise
        log.info("import-csv: created table %s", tables.source.name)
        return [t for t in wanted if t.name not in before]
    missing = [c for c in columns if c.lower() not in present]
    if missing:
        raise DataValidationError(f"source table {tables.source.name!r} lacks column(s): {', '.join(missing)}; nothing loaded")
    return []


def import_csv(engine: sa.Engine, tables: Tables, settings: Settings, path: Path, mapping: CsvMapping) -> int:
    """Check the whole file, then append its rows in one transaction; returns the rows loaded."""
    started = time.perf_counter()
    frame = parse_csv(path, settings, mapping)
    created = _check_table(engine, tables, list(frame.columns))
    try:
        written = write_telemetry(engine, tables, frame)
    except sa.exc.SQLAlchemyError:
        _drop(engine, created)
        raise
    compressors = frame[settings.source.compressor_column].nunique()
    log.info("import-csv: loaded %d rows (%d compressors) from %s into %s in %.2f s", written, compressors, path, tables.source.name, time.perf_counter() - started)
    return written
