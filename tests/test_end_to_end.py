"""The whole pipeline through the command line on SQLite: simulate -> train -> run -> run again."""
import contextlib
import io
import json
import logging

import pandas as pd
import pytest
import sqlalchemy as sa

from core.settings import load_settings
from db.schema import build_tables
from scheduler.cli import main

TRAIN_END = pd.Timestamp("2026-01-02 00:00:00")


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def table_counts(engine, tables) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in tables.result_tables}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Three compressors, two days (faults only on day 2), a model trained on day 1, one live run."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    tmp = tmp_path_factory.mktemp("e2e")
    config = tmp / "settings.toml"
    config.write_text(
        f'model_dir = "{tmp / "models"}"\n'
        f'[database]\nurl = "sqlite:///{tmp / "e2e.sqlite"}"\n'
        "[training]\nepochs = 3\nbatch_size = 128\npatience = 2\nwindow_stride = 3\n",
        encoding="utf-8",
    )
    events_csv = tmp / "events.csv"
    base = ["--config", str(config)]
    try:
        simulated = cli(*base, "simulate", "--compressors", "3", "--days", "2", "--seed", "7", "--fault-free-days", "1", "--events-csv", str(events_csv))
        trained = cli(*base, "train", "--start", "2026-01-01", "--end", TRAIN_END.isoformat())
        settings = load_settings(config, env={})
        from db.engine import make_engine

        engine, tables = make_engine(settings.db_url), build_tables(settings)
        first = cli(*base, "run", "--once")
        after_first = table_counts(engine, tables)
        with engine.connect() as conn:
            checkpoints_first = conn.execute(sa.select(tables.checkpoint)).mappings().all()
        second = cli(*base, "run", "--once")
        status = cli(*base, "status", "--json")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    yield {
        "settings": settings, "engine": engine, "tables": tables, "events": pd.read_csv(events_csv, parse_dates=["start", "end"]),
        "simulated": simulated, "trained": trained, "first": first, "second": second, "status": status,
        "after_first": after_first, "checkpoints_first": checkpoints_first,
    }
    engine.dispose()


def read(p, table) -> pd.DataFrame:
    with p["engine"].connect() as conn:
        return pd.DataFrame(conn.execute(sa.select(table)).mappings().all())


def test_every_command_succeeded(pipeline):
    assert pipeline["simulated"][0] == 0
    code, version = pipeline["trained"]
    assert code == 0 and version.strip()
    assert pipeline["first"][0] == 0
    assert pipeline["second"][0] == 0
    assert pipeline["status"][0] == 0
    models = json.loads((pipeline["settings"].model_dir / "current.json").read_text())
    assert models["version"] == version.strip()


def test_tables_are_filled(pipeline):
    tables = pipeline["tables"]
    counts = pipeline["after_first"]
    assert counts[tables.detailed.name] > 0
    assert counts[tables.results.name] == counts[tables.detailed.name]
    assert counts[tables.checkpoint.name] == 3
    detailed = read(pipeline, tables.detailed)
    assert sorted(detailed["compressor_id"].unique()) == ["C01", "C02", "C03"]
    assert detailed[list(tables.error_columns)].notna().all().all()
    assert (detailed[list(tables.error_columns)] >= 0).all().all()
    assert (pd.to_datetime(detailed["window_end"]) > TRAIN_END).all()  # live scoring starts after the training range
    assert detailed.groupby("compressor_id")["window_end"].apply(lambda s: s.is_unique).all()
    anomalous = detailed["is_anomaly"].astype(bool)
    assert detailed.loc[anomalous, "top_features"].notna().all()
    assert detailed.loc[~anomalous, "top_features"].isna().all()


def test_summary_rows_account_for_every_new_row(pipeline):
    summary = read(pipeline, pipeline["tables"].summary)
    assert len(summary) == 3
    assert (summary["status"] == "ok").all()
    assert (summary["mode"] == "live").all()
    assert summary["batch_id"].nunique() == 1
    assert (summary["rows_read"] == 2879).all()  # day 2 after the training end, one row every 30 s
    assert (summary["windows_scored"] == summary["rows_read"]).all()  # context rows let every new row end a window
    assert (summary["rows_rejected"] == 0).all() and (summary["gaps"] == 0).all()
    detailed = read(pipeline, pipeline["tables"].detailed)
    per_compressor = detailed.groupby("compressor_id").agg(windows=("score", "size"), anomalies=("is_anomaly", "sum"), alerts=("triggered", "sum"))
    merged = summary.set_index("compressor_id").join(per_compressor)
    assert (merged["windows_scored"] == merged["windows"]).all()
    assert (merged["anomaly_points"] == merged["anomalies"]).all()
    assert (merged["triggered_events"] == merged["alerts"]).all()


def test_checkpoint_is_at_the_last_row_of_each_compressor(pipeline):
    tables, settings = pipeline["tables"], pipeline["settings"]
    ts, cid = tables.source.c[settings.source.timestamp_column], tables.source.c[settings.source.compressor_column]
    with pipeline["engine"].connect() as conn:
        last = dict(conn.execute(sa.select(cid, sa.func.max(ts)).group_by(cid)).all())
    checkpoints = {row["compressor_id"]: row for row in pipeline["checkpoints_first"]}
    assert set(checkpoints) == set(last) == {"C01", "C02", "C03"}
    for name, row in checkpoints.items():
        assert pd.Timestamp(row["last_timestamp"]) == pd.Timestamp(last[name]) == pd.Timestamp("2026-01-02 23:59:30")
        assert row["model_version"] == pipeline["trained"][1].strip()


def test_injected_faults_are_found(pipeline):
    events = pipeline["events"]
    assert len(events) > 0 and (events["start"] >= TRAIN_END).all()  # faults only on the scored day
    detailed = read(pipeline, pipeline["tables"].detailed)
    alerts = detailed.loc[detailed["triggered"].astype(bool), ["compressor_id", "window_end"]]
    alerts["window_end"] = pd.to_datetime(alerts["window_end"])
    found = [
        bool(((alerts["compressor_id"] == e.compressor_id) & alerts["window_end"].between(e.start, e.end)).any())
        for e in events.itertuples()
    ]
    recall = sum(found) / len(found)
    inside = sum(
        bool(((events["compressor_id"] == a.compressor_id) & (events["start"] <= a.window_end) & (events["end"] >= a.window_end)).any())
        for a in alerts.itertuples()
    )
    print(f"end-to-end event recall: {sum(found)}/{len(found)} = {recall:.2f}; alerts: {len(alerts)} ({len(alerts) - inside} outside every fault)")
    assert recall > 0


def test_second_run_finds_nothing_new_and_writes_nothing(pipeline):
    assert table_counts(pipeline["engine"], pipeline["tables"]) == pipeline["after_first"]
    with pipeline["engine"].connect() as conn:
        checkpoints = conn.execute(sa.select(pipeline["tables"].checkpoint)).mappings().all()
    strip = lambda rows: sorted((r["compressor_id"], r["last_timestamp"], r["consecutive_count"], r["model_version"]) for r in rows)  # noqa: E731
    assert strip(checkpoints) == strip(pipeline["checkpoints_first"])


def test_status_after_the_runs(pipeline):
    rows = json.loads(pipeline["status"][1])
    assert [r["compressor_id"] for r in rows] == ["C01", "C02", "C03"]
    assert all(r["rows_waiting"] == 0 for r in rows)
    assert all(r["checkpoint"].startswith("2026-01-02 23:59:30") for r in rows)
    assert all(r["last_batch"]["status"] == "ok" and r["last_batch"]["windows_scored"] == 2879 for r in rows)
