"""The whole pipeline through the command line on one database, with checks after every step.

Used by tests/test_databases.py (SQLite, PostgreSQL, MariaDB) and tests/test_mssql_container.py
(SQL Server). The model is trained once, on SQLite, by `train_once`; it does not depend on the
database, and every database gets the same simulated fleet (same seed), so the scores stored in
each must equal the scores computed in memory from the simulated frame.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.settings import load_settings
from db.engine import make_engine
from db.schema import build_tables
from db.source import read_rows
from tolerances import SCORE_RTOL
from models.artifacts import load_bundle
from pipeline.scoring import score_windows
from pipeline.training_data import load_normal_windows
from pipeline.prepare import window_rows
from scheduler.cli import main
from simulation.fleet import simulate_fleet

START = datetime(2026, 1, 1)
TRAIN_END = START + timedelta(days=1)
BACKFILL = (START + timedelta(hours=12), START + timedelta(hours=36))
FLEET = {"compressors": 3, "days": 2.0, "seed": 11}
CONFIG = """
[training]
epochs = 1
batch_size = 128
patience = 1
window_stride = 4

[detection]
consecutive_trigger = 3
"""


@dataclass
class Trained:
    """A model trained on SQLite through the command line, and what every database must reproduce."""

    config: Path
    model_dir: Path
    sqlite_url: str
    telemetry: pd.DataFrame
    expected: pd.DataFrame  # compressor_id, window_end, score, is_anomaly for every window of the fleet
    thresholds: dict[str, float]
    training_windows: dict  # compressor -> WindowSet of the normal training rows, read from SQLite


def cli(*args: str) -> int:
    return main([str(a) for a in args])


def simulate_args() -> list[str]:
    return ["simulate", "--compressors", FLEET["compressors"], "--days", FLEET["days"], "--seed", FLEET["seed"], "--start", START.isoformat()]


def train_once(folder: Path) -> Trained:
    """simulate + train on a SQLite file, then the expected scores of every window, in memory."""
    config = folder / "tiny.toml"
    config.write_text(CONFIG, encoding="utf-8")
    model_dir, url = folder / "models", f"sqlite:///{folder / 'train.sqlite'}"
    assert cli("--config", config, "--db-url", url, "--model-dir", model_dir, *simulate_args()) == 0
    assert cli("--config", config, "--db-url", url, "--model-dir", model_dir, "train", "--end", TRAIN_END.isoformat()) == 0
    telemetry = simulate_fleet(FLEET["compressors"], FLEET["days"], start=START, seed=FLEET["seed"]).telemetry
    settings = load_settings(config, env={}, db_url=url, model_dir=str(model_dir))
    bundle = load_bundle(model_dir)
    error_columns = build_tables(settings).error_columns
    expected = []
    for cid, rows in telemetry.groupby("compressor_id"):
        windows = window_rows(rows, settings, bundle.features, bundle.window).windows
        scored = score_windows(bundle, cid, windows, error_columns)
        expected.append(scored[["window_end", "score", "is_anomaly"]].assign(compressor_id=cid))
    engine = make_engine(url)
    training_windows = load_normal_windows(engine, build_tables(settings), settings, START, TRAIN_END)
    engine.dispose()
    return Trained(config, model_dir, url, telemetry, pd.concat(expected, ignore_index=True), dict(bundle.thresholds), training_windows)


def _stored(engine: sa.Engine, table: sa.Table, time_column: str) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.compressor_id, table.c[time_column], table.c.score, table.c.is_anomaly)).all()
    frame = pd.DataFrame(rows, columns=["compressor_id", "window_end", "score", "is_anomaly"])
    frame["window_end"] = pd.to_datetime(frame["window_end"])
    frame["is_anomaly"] = frame["is_anomaly"].astype(bool)
    return frame


def _check_scores(stored: pd.DataFrame, trained: Trained) -> None:
    """Every stored window once, with the score and flag computed in memory."""
    assert not stored.duplicated(["compressor_id", "window_end"]).any()
    merged = stored.merge(trained.expected, on=["compressor_id", "window_end"], how="left", suffixes=("", "_expected"), validate="1:1")
    assert merged["score_expected"].notna().all(), "a stored window has no counterpart in memory"
    np.testing.assert_allclose(merged["score"], merged["score_expected"], rtol=SCORE_RTOL)
    threshold = merged["compressor_id"].map(trained.thresholds)
    clear = (merged["score"] - threshold).abs() > 1e-6 * threshold  # flags of scores at the threshold may differ by rounding
    assert (merged.loc[clear, "is_anomaly"] == merged.loc[clear, "is_anomaly_expected"].astype(bool)).all()


def _counts(engine: sa.Engine, table: sa.Table) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.compressor_id, sa.func.count()).group_by(table.c.compressor_id)).all()
    return {cid: int(n) for cid, n in rows}


def check_pipeline(url: str, trained: Trained, capsys) -> None:
    """simulate -> training data -> run -> backfill -> status, asserting after each."""
    base = ["--config", trained.config, "--db-url", url, "--model-dir", trained.model_dir]
    settings = load_settings(trained.config, env={}, db_url=url, model_dir=str(trained.model_dir))
    tables = build_tables(settings)
    telemetry = trained.telemetry
    per_compressor = telemetry.groupby("compressor_id")["timestamp"]

    assert cli(*base, *simulate_args()) == 0
    engine = make_engine(url)
    try:
        assert _counts(engine, tables.source) == per_compressor.size().to_dict()
        with engine.connect() as conn:
            stored = read_rows(conn, tables, settings, "C01", with_label=True)
        original = telemetry[telemetry["compressor_id"] == "C01"].reset_index(drop=True)
        assert (pd.to_datetime(stored["timestamp"]).to_numpy() == original["timestamp"].to_numpy()).all()
        np.testing.assert_array_equal(stored[list(settings.data.features)].to_numpy(float), original[list(settings.data.features)].to_numpy(float))
        assert (stored["label"].astype(int).to_numpy() == original["label"].to_numpy()).all()

        here, reference = load_normal_windows(engine, tables, settings, START, TRAIN_END), trained.training_windows
        assert here.keys() == reference.keys()
        for cid in here:  # `train` on this database would see exactly what it saw on SQLite
            np.testing.assert_array_equal(here[cid].end_times, reference[cid].end_times)
            np.testing.assert_array_equal(here[cid].windows, reference[cid].windows)

        assert cli(*base, "run", "--once") == 0
        after_train = per_compressor.apply(lambda t: int((t > TRAIN_END).sum())).to_dict()
        assert _counts(engine, tables.detailed) == after_train
        assert _counts(engine, tables.results) == after_train
        _check_scores(_stored(engine, tables.detailed, "window_end"), trained)
        _check_scores(_stored(engine, tables.results, "timestamp"), trained)
        with engine.connect() as conn:
            checkpoints = dict(conn.execute(sa.select(tables.checkpoint.c.compressor_id, tables.checkpoint.c.last_timestamp)).all())
            statuses = conn.execute(sa.select(tables.summary.c.mode, tables.summary.c.status)).all()
        assert {c: pd.Timestamp(t) for c, t in checkpoints.items()} == per_compressor.max().to_dict()
        assert sorted(statuses) == [("live", "ok")] * len(after_train)

        # The range overlaps the live run's windows (after TRAIN_END): those are replaced, not added.
        assert cli(*base, "backfill", "--start", BACKFILL[0].isoformat(), "--end", BACKFILL[1].isoformat()) == 0
        scored = per_compressor.apply(lambda t: int((t >= BACKFILL[0]).sum())).to_dict()
        assert _counts(engine, tables.detailed) == scored
        assert _counts(engine, tables.results) == scored
        _check_scores(_stored(engine, tables.detailed, "window_end"), trained)

        capsys.readouterr()
        assert cli(*base, "status", "--json") == 0
        status = {row["compressor_id"]: row for row in json.loads(capsys.readouterr().out)}
        assert status.keys() == after_train.keys()
        for cid, row in status.items():
            assert row["rows_waiting"] == 0
            assert pd.Timestamp(row["checkpoint"]) == per_compressor.max()[cid]
            assert (row["last_batch"]["mode"], row["last_batch"]["status"]) == ("backfill", "ok")
    finally:
        engine.dispose()
