"""Bulk write speed of detailed result rows: `python benchmarks/db_write.py --db-url URL [--rows N]`.

Writes N rows (default 1,000,000; 10 compressors) to lstm_predictions_detailed in one
transaction through db.results.insert_frame, in a scratch database created on the URL's server
(SQLite: a new file next to the URL's file) and dropped afterwards. Ends with one JSON line:
{"db": ..., "rows": ..., "seconds": ..., "rows_per_s": ...}.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from core.clock import utcnow  # noqa: E402
from core.logs import setup_logging  # noqa: E402
from core.settings import Settings  # noqa: E402
from db.engine import make_engine, safe_url  # noqa: E402
from db.results import insert_frame  # noqa: E402
from db.schema import build_tables, create_all  # noqa: E402
from db.scratch import scratch_database  # noqa: E402

log = logging.getLogger("benchmarks.db_write")


def detailed_rows(rows: int, compressors: int, error_columns: tuple[str, ...], seed: int = 0) -> pd.DataFrame:
    """Realistic detailed result rows: 30 s windows, ~5 % anomalous with top signals, one error per feature."""
    rng = np.random.default_rng(seed)
    per = -(-rows // compressors)
    ends = np.tile(pd.date_range("2026-01-01", periods=per, freq="30s").to_numpy(), compressors)[:rows]
    ids = np.repeat([f"C{i + 1:02d}" for i in range(compressors)], per)[:rows]
    anomalous = rng.random(rows) < 0.05
    signals = np.array(["filter_dp, seal_gas_flow, vibration", "temperature, flow, motor_current", "seal_gas_temp, primary_vent_flow, filter_dp"], dtype=object)
    frame = pd.DataFrame(
        {
            "batch_id": "bench",
            "compressor_id": ids,
            "window_end": ends,
            "model_version": f"bench-{uuid.uuid4().hex[:8]}",
            "score": rng.gamma(2.0, 0.1, rows),
            "threshold": 0.45,
            "is_anomaly": anomalous,
            "consecutive_count": np.where(anomalous, rng.integers(1, 6, rows), 0),
            "triggered": anomalous & (rng.random(rows) < 0.2),
            "top_features": np.where(anomalous, signals[rng.integers(0, len(signals), rows)], None),
            "created_at": utcnow(),
        }
    )
    for column in error_columns:
        frame[column] = rng.gamma(2.0, 0.1, rows)
    return frame


def run(url: str, rows: int, compressors: int) -> dict:
    settings = Settings(db_url=url)
    tables = build_tables(settings)
    engine = make_engine(url)
    try:
        create_all(engine, tables, include_source=False)
        frame = detailed_rows(rows, compressors, tables.error_columns)
        log.info("writing %d detailed rows (%d columns) to %s", rows, frame.shape[1], safe_url(engine.url))
        started = time.perf_counter()
        with engine.begin() as conn:
            insert_frame(conn, tables.detailed, frame)
        seconds = time.perf_counter() - started
        with engine.connect() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(tables.detailed)).scalar_one()
        if stored != rows:
            raise RuntimeError(f"{stored} rows stored, {rows} written")
        log.info("wrote %d rows in %.2f s", rows, seconds)
        return {"db": "mariadb" if getattr(engine.dialect, "is_mariadb", False) else engine.dialect.name, "rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True, help="server (or SQLite file) to benchmark; a scratch database is used")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--compressors", type=int, default=10)
    args = parser.parse_args(argv)
    setup_logging("INFO")
    with scratch_database(args.db_url, "bench") as url:
        result = run(url, args.rows, args.compressors)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
