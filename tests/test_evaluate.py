"""evaluate: in-memory scoring of a labelled range against the simulator's ground truth, the report,
model selection by detector (evaluate, run, backfill) and the command line."""
from __future__ import annotations

import dataclasses
import math
import shutil
import sqlite3
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from conftest import START
from core.errors import DataValidationError, UnknownCompressorError
from core.settings import with_section
from models.alarms import AlarmRule
from db.engine import make_engine
from db.schema import build_tables, create_all
from db.source import write_telemetry
from tolerances import SCORE_RTOL
from evaluation.evaluate import OVERALL, evaluate_range
from evaluation.metrics import auroc, point_metrics
from evaluation.report import REPORT_FILE, write_report
from scheduler.cli import main
from scheduler.runner import Runner

RATES = ("auroc", "average_precision", "precision_at_labelled", "precision_at_fixed_k", "f1", "far", "mar", "event_recall")



@pytest.fixture(scope="module")
def day2(trained_fleet):
    """The trained fleet's day 2 (after the training range), evaluated with the promoted model."""
    settings, bundle = trained_fleet["settings"], trained_fleet["bundle"]
    start, end = trained_fleet["train_end"], trained_fleet["train_end"] + timedelta(days=1)
    engine = make_engine(settings.db_url)
    try:
        result = evaluate_range(engine, build_tables(settings), settings, bundle, start, end)
    finally:
        engine.dispose()
    return result


@pytest.fixture
def copied(trained_fleet, tmp_path):
    """A private copy of the fleet's database and model directory (for tests that write)."""
    settings = trained_fleet["settings"]
    source = sqlite3.connect(settings.db_url.removeprefix("sqlite:///"))
    target = sqlite3.connect(tmp_path / "copy.sqlite")
    source.backup(target)
    source.close()
    target.close()
    shutil.copytree(settings.model_dir, tmp_path / "models")
    return settings.replace(db_url=f"sqlite:///{tmp_path / 'copy.sqlite'}", model_dir=tmp_path / "models")


def day_rows(trained_fleet, cid: str) -> pd.DataFrame:
    """The simulator's rows of one compressor on day 2."""
    telemetry = trained_fleet["fleet"].telemetry
    start = trained_fleet["train_end"]
    part = telemetry[(telemetry["compressor_id"] == cid) & (telemetry["timestamp"] >= start) & (telemetry["timestamp"] <= start + timedelta(days=1))]
    return part.reset_index(drop=True)


# ----------------------------------------------------------- scores and labels
def test_every_row_of_day_two_ends_one_window_with_its_own_label(day2, trained_fleet):
    assert day2.compressors == ["C01", "C02", "C03"]
    for cid in day2.compressors:
        rows = day_rows(trained_fleet, cid)
        part = day2.frame[day2.frame["compressor_id"] == cid].reset_index(drop=True)
        # gap-free simulated data with a day of context before: one window ends at every row
        assert len(part) == len(rows) == 2880
        assert (part["window_end"].to_numpy() == rows["timestamp"].to_numpy()).all()
        assert (part["label"].to_numpy() == rows["label"].to_numpy()).all()
        assert day2.metrics.loc[cid, "labelled_windows"] == rows["label"].sum()
    assert day2.metrics.loc[OVERALL, "labelled_windows"] > 0  # the range holds labelled faults


def test_metrics_lie_in_unit_range_and_pool_the_compressors(day2):
    metrics = day2.metrics
    for scope in metrics.index:
        for column in RATES:
            value = metrics.loc[scope, column]
            assert math.isnan(value) or 0.0 <= value <= 1.0, (scope, column, value)
    overall = day2.overall
    frame = day2.frame
    assert overall["windows"] == len(frame) == metrics.loc[day2.compressors, "windows"].sum()
    assert overall["alerts"] == int(frame["triggered"].sum())
    assert overall["false_alarms"] == metrics.loc[day2.compressors, "false_alarms"].sum()
    assert overall["observed_hours"] == pytest.approx(3 * 24.0)  # 3 compressors x 2880 rows x 30 s
    assert overall["false_alarms_per_hour"] == pytest.approx(overall["false_alarms"] / 72.0)
    point = point_metrics(frame["label"], frame["is_anomaly"])
    assert (overall["f1"], overall["far"], overall["mar"]) == pytest.approx((point["f1"], point["far"], point["mar"]))
    assert overall["auroc"] == pytest.approx(auroc(frame["label"], frame["score"] / frame["threshold"]))
    for cid in day2.compressors:
        part = frame[frame["compressor_id"] == cid]
        # within one compressor the threshold is a constant: score and score / threshold rank alike
        assert metrics.loc[cid, "auroc"] == pytest.approx(auroc(part["label"], part["score"]), nan_ok=True)
        assert (part["is_anomaly"] == (part["score"] > part["threshold"])).all()


def test_labelled_events_match_the_simulator_and_delays_match_the_alerts(day2, trained_fleet):
    start, end = trained_fleet["train_end"], trained_fleet["train_end"] + timedelta(days=1)
    truth = trained_fleet["fleet"].events
    truth = truth[(truth["end"] >= start) & (truth["start"] <= end)]
    expected = sorted((r.compressor_id, max(r.start, pd.Timestamp(start)), r.end) for r in truth.itertuples())
    assert sorted(day2.events[["compressor_id", "start", "end"]].itertuples(index=False, name=None)) == expected
    assert len(expected) > 0
    for event in day2.events.itertuples():
        part = day2.frame[day2.frame["compressor_id"] == event.compressor_id]
        inside = part.loc[part["triggered"] & (part["window_end"] >= event.start) & (part["window_end"] <= event.end), "window_end"]
        assert event.detected == (len(inside) > 0)
        if event.detected:
            assert event.first_alert == inside.min()
            assert event.delay_min == pytest.approx((inside.min() - event.start).total_seconds() / 60)
        else:
            assert pd.isna(event.first_alert) and math.isnan(event.delay_min)
    detected = day2.events[day2.events["detected"]]
    assert day2.metrics.loc[OVERALL, "events"] == len(day2.events)
    assert day2.metrics.loc[OVERALL, "events_detected"] == len(detected)
    if len(detected):
        assert day2.overall["median_delay_min"] == pytest.approx(detected["delay_min"].median())
        assert day2.overall["max_delay_min"] == pytest.approx(detected["delay_min"].max())


def test_scores_and_alerts_equal_a_backfill_of_the_same_range(day2, trained_fleet, copied):
    """Evaluation scores in memory exactly what the pipeline stores (and stores nothing itself)."""
    engine = make_engine(copied.db_url)
    tables = build_tables(copied)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(tables.detailed)).scalar() == 0
        report = Runner(copied, engine, trained_fleet["bundle"]).backfill(day2.start, day2.end)
        assert report.ok
        with engine.connect() as conn:
            stored = pd.read_sql(sa.select(tables.detailed.c.compressor_id, tables.detailed.c.window_end, tables.detailed.c.score, tables.detailed.c.triggered), conn)
    finally:
        engine.dispose()
    stored["window_end"] = pd.to_datetime(stored["window_end"])
    both = day2.frame.merge(stored, on=["compressor_id", "window_end"], suffixes=("", "_stored"), validate="one_to_one")
    assert len(both) == len(day2.frame) == len(stored)
    np.testing.assert_allclose(both["score"], both["score_stored"], rtol=SCORE_RTOL)
    assert (both["triggered"] == both["triggered_stored"].astype(bool)).all()


# ------------------------------------------------------ hand-checkable extremes
def test_a_threshold_nothing_crosses(trained_fleet, day2):
    settings, bundle = trained_fleet["settings"], trained_fleet["bundle"]
    silent = dataclasses.replace(bundle, thresholds={c: 1e12 for c in bundle.thresholds})
    engine = make_engine(settings.db_url)
    try:
        result = evaluate_range(engine, build_tables(settings), settings, silent, day2.start, day2.end)
    finally:
        engine.dispose()
    overall = result.overall
    assert (overall["alerts"], overall["false_alarms"], overall["false_alarms_per_hour"]) == (0, 0, 0.0)
    assert (overall["far"], overall["mar"], overall["f1"]) == (0.0, 1.0, 0.0)
    assert overall["event_recall"] == 0.0 and math.isnan(overall["median_delay_min"])
    # one threshold for all: pooled ranking is by raw score, and per compressor ranking is unchanged
    assert overall["auroc"] == pytest.approx(auroc(result.frame["label"], result.frame["score"]))
    for cid in result.compressors:
        assert result.metrics.loc[cid, "auroc"] == pytest.approx(day2.metrics.loc[cid, "auroc"], nan_ok=True)


def test_every_window_anomalous_with_a_one_window_trigger(trained_fleet, day2):
    """Threshold ~0, trigger 1: each compressor's gap-free day is one anomalous run with one alert at its start."""
    settings, bundle = trained_fleet["settings"], trained_fleet["bundle"]
    loud = dataclasses.replace(bundle, thresholds={c: 1e-9 for c in bundle.thresholds}, alarm=AlarmRule("consecutive", 1, quiet_windows=0))
    engine = make_engine(settings.db_url)
    try:
        result = evaluate_range(engine, build_tables(settings), settings, loud, day2.start, day2.end)
    finally:
        engine.dispose()
    overall = result.overall
    labelled, windows = overall["labelled_windows"], overall["windows"]
    assert (overall["far"], overall["mar"]) == (1.0, 0.0)
    assert overall["f1"] == pytest.approx(2 * labelled / (2 * labelled + windows - labelled))
    alerts = result.frame.loc[result.frame["triggered"], ["compressor_id", "window_end"]]
    assert sorted(alerts["compressor_id"]) == ["C01", "C02", "C03"]
    assert (alerts["window_end"] == pd.Timestamp(day2.start)).all()
    tolerance = pd.Timedelta(seconds=result.tolerance_s)
    hits = [((result.events["compressor_id"] == cid) & (result.events["start"] <= day2.start) & (result.events["end"] + tolerance >= day2.start)).any() for cid in result.compressors]
    assert overall["false_alarms"] == 3 - sum(hits)
    assert overall["events_detected"] == int(((result.events["start"] == pd.Timestamp(day2.start))).sum())


# ------------------------------------------------------------------------ report
def test_report_and_plots(day2, trained_fleet, tmp_path):
    path = write_report(day2, trained_fleet["settings"], tmp_path / "out")
    assert path == tmp_path / "out" / REPORT_FILE
    text = path.read_text(encoding="utf-8")
    assert f"# Evaluation of model {day2.model_version}" in text
    table = [line for line in text.splitlines() if line.startswith(("| overall |", "| C0"))]
    assert [line.split(" | ")[0] for line in table[:4]] == ["| overall", "| C01", "| C02", "| C03"]
    assert f"| {day2.overall['windows']} | {day2.overall['labelled_windows']} |" in table[0]
    event_rows = [line for line in text.splitlines() if line.startswith("| C0") and line.count("|") == 8]
    assert len(event_rows) == len(day2.events)
    for cid in day2.compressors:
        png = tmp_path / "out" / f"scores_{cid}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert f"![{cid}](scores_{cid}.png)" in text


# ------------------------------------------------------------------------ errors
def test_empty_range_is_a_clear_error(trained_fleet):
    settings = trained_fleet["settings"]
    engine = make_engine(settings.db_url)
    try:
        with pytest.raises(DataValidationError, match="nothing to evaluate: no windows end between 2030-01-01"):
            evaluate_range(engine, build_tables(settings), settings, trained_fleet["bundle"], START.replace(year=2030), START.replace(year=2030, day=2))
        with pytest.raises(DataValidationError, match="before its start"):
            evaluate_range(engine, build_tables(settings), settings, trained_fleet["bundle"], START + timedelta(days=1), START)
        with pytest.raises(UnknownCompressorError, match="C99"):
            evaluate_range(engine, build_tables(settings), settings, trained_fleet["bundle"], START, START + timedelta(days=1), ["C99"])
    finally:
        engine.dispose()


def test_no_label_column_is_a_clear_error(trained_fleet, tmp_path):
    settings = trained_fleet["settings"]
    unlabelled = with_section(settings.replace(db_url=f"sqlite:///{tmp_path / 'nolabel.sqlite'}"), "source", label_column=None)
    engine, tables = make_engine(unlabelled.db_url), build_tables(unlabelled)
    try:
        create_all(engine, tables)
        write_telemetry(engine, tables, trained_fleet["fleet"].telemetry.head(100).drop(columns="label"))
        with pytest.raises(DataValidationError, match=r"no label column is configured"):
            evaluate_range(engine, tables, unlabelled, trained_fleet["bundle"], START, START + timedelta(hours=1))
        # configured, but the table has no such column
        with pytest.raises(DataValidationError, match=r"has no label column 'label'"):
            evaluate_range(engine, build_tables(settings), settings, trained_fleet["bundle"], START, START + timedelta(hours=1))
    finally:
        engine.dispose()


# ------------------------------------------------------------------ command line
def fleet_args(settings) -> list[str]:
    return ["--db-url", settings.db_url, "--model-dir", str(settings.model_dir)]


def test_cli_evaluate(trained_fleet, day2, tmp_path, capsys):
    settings = trained_fleet["settings"]
    out = tmp_path / "report"
    code = main([*fleet_args(settings), "evaluate", "--start", day2.start.isoformat(), "--end", day2.end.isoformat(), "--out", str(out), "--compressor", "C03"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert f"report: {out / REPORT_FILE}" in stdout
    auroc_line = next(line for line in stdout.splitlines() if line.startswith("AUROC"))
    assert float(auroc_line.split()[-1]) == pytest.approx(day2.metrics.loc["C03", "auroc"], abs=5e-4)
    assert (out / REPORT_FILE).is_file() and (out / "scores_C03.png").is_file() and not (out / "scores_C01.png").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--start", "2030-01-01", "--end", "2030-01-02"], "error: nothing to evaluate"),
        (["--start", "2026-01-02", "--end", "2026-01-03", "--model", "nope"], "error: model version 'nope' not found"),
        (["--start", "2026-01-02", "--end", "2026-01-03", "--detector", "iforest"], "error: no iforest model version"),
        (["--start", "2026-01-02", "--end", "2026-01-03", "--compressor", "C99"], "error: compressor 'C99' is not in model"),
    ],
    ids=["empty-range", "unknown-version", "no-such-detector", "unknown-compressor"],
)
def test_cli_evaluate_errors(trained_fleet, tmp_path, capsys, extra, message):
    out = tmp_path / "report"
    assert main([*fleet_args(trained_fleet["settings"]), "evaluate", *extra, "--out", str(out)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message)
    assert not out.exists()


def test_detector_picks_the_newest_version_of_its_kind(copied, trained_fleet, tmp_path, capsys):
    """An isolation-forest version next to the promoted LSTM one: --detector selects it for evaluate and backfill."""
    promoted = trained_fleet["bundle"].version
    assert main([*fleet_args(copied), "train", "--detector", "iforest", "--start", START.isoformat(), "--end", trained_fleet["train_end"].isoformat(), "--no-promote"]) == 0
    iforest = capsys.readouterr().out.strip().splitlines()[-1]
    assert iforest != promoted
    day = ["--start", trained_fleet["train_end"].isoformat(), "--end", (trained_fleet["train_end"] + timedelta(hours=6)).isoformat()]

    assert main([*fleet_args(copied), "evaluate", *day, "--detector", "iforest", "--out", str(tmp_path / "r1")]) == 0
    assert f"model {iforest} (iforest)" in capsys.readouterr().out
    assert main([*fleet_args(copied), "evaluate", *day, "--out", str(tmp_path / "r2")]) == 0
    assert f"model {promoted} (lstm_ae)" in capsys.readouterr().out
    assert main([*fleet_args(copied), "evaluate", *day, "--model", promoted, "--detector", "iforest", "--out", str(tmp_path / "r3")]) == 1
    assert "is a lstm_ae model, not iforest" in capsys.readouterr().err

    assert main([*fleet_args(copied), "backfill", *day, "--compressor", "C01", "--detector", "iforest"]) == 0
    assert main([*fleet_args(copied), "backfill", *day, "--detector", "iforest", "--executor", "dask", "--dask-address", "local:1"]) == 1
    assert "--detector works with the local executor only" in capsys.readouterr().err
    engine = make_engine(copied.db_url)
    tables = build_tables(copied)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.select(tables.detailed.c.model_version, sa.func.count()).group_by(tables.detailed.c.model_version)).all()
    finally:
        engine.dispose()
    assert versions == [(iforest, 6 * 120 + 1)]  # windows ending in [start, start + 6 h] at 30 s
