"""Normal-period windows for training, read per compressor from the source table."""
from __future__ import annotations

import logging
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from core.settings import Settings
from db.schema import Tables
from db.source import list_compressors, read_rows
from pipeline.validate import validate_rows
from pipeline.windows import WindowSet, build_windows

log = logging.getLogger(__name__)


def normal_rows(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Rows not labelled as faulty (all rows when the source has no label column)."""
    label = settings.source.label_column
    if not label or label not in frame.columns:
        return frame
    flags = pd.to_numeric(frame[label], errors="coerce").fillna(0)
    return frame.loc[flags == 0]


def load_normal_windows(
    engine: sa.Engine,
    tables: Tables,
    settings: Settings,
    start: datetime | None,
    end: datetime | None,
    compressors: list[str] | None = None,
) -> dict[str, WindowSet]:
    """Windows of normal rows in [start, end] per compressor; labelled rows break windows like gaps."""
    sets: dict[str, WindowSet] = {}
    with engine.connect() as conn:
        for cid in compressors or list_compressors(conn, tables, settings):
            after = start - pd.Timedelta(microseconds=1) if start else None
            frame = normal_rows(read_rows(conn, tables, settings, cid, after=after, until=end, with_label=True), settings)
            clean = validate_rows(frame, settings.source.timestamp_column, settings.data.features, settings.data.missing_value_rule, settings.data.window)
            sets[cid] = build_windows(clean.values, clean.times, settings.data.window, settings.max_gap_s)
            log.info("training data %s: %d normal rows, %d windows, %d rejected", cid, len(frame), len(sets[cid]), clean.rows_rejected)
    return sets
