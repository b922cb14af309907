"""Backfill: idempotent, the live checkpoint moves only when asked (and only forward), safe next to a live run."""
from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from db_servers import database
from scheduler.runner import Runner
from scheduler_harness import (
    START,
    TRAIN_END,
    Scheduler,
    append,
    assert_same_tables,
    leases_held,
    prepared,
    run_live,
    snapshot,
    trained_small_fleet,
    write_config,
)

RESULTS = ("lstm_predictions_detailed", "anomaly_detection_results")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return trained_small_fleet(tmp_path_factory.getbasetemp() / "small_fleet")


def _same(a: pd.DataFrame, b: pd.DataFrame, name: str) -> None:
    """The same rows; a window scored in another batch is the same to float32 round-off (assert_same_tables)."""
    assert_same_tables({name: a}, {name: b})


def test_backfill_twice_gives_the_same_rows_and_leaves_the_checkpoint(fleet, tmp_path):
    config = write_config(tmp_path / "eo.toml")
    settings = fleet.settings(f"sqlite:///{tmp_path / 'bf.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    training = fleet.telemetry[fleet.telemetry["timestamp"] > START + timedelta(hours=12)]  # includes 2 h of the training range
    append(engine, tables, training[training["timestamp"] <= TRAIN_END + timedelta(hours=3)])
    run_live(settings, engine, fleet.bundle)
    live = snapshot(engine, tables)
    runner = Runner(settings, engine, fleet.bundle)
    # Inside the live range: the same windows, the same values (the count carries in from the stored window before).
    assert runner.backfill(TRAIN_END + timedelta(minutes=30), TRAIN_END + timedelta(hours=2)).ok
    once = snapshot(engine, tables)
    for name in (*RESULTS, "lstm_scheduler_checkpoint"):
        _same(once[name], live[name], name)
    # Before the live range (the training range): new windows, and again the same rows when repeated.
    early = (START + timedelta(hours=12, minutes=30), TRAIN_END)
    assert runner.backfill(*early).ok
    first = snapshot(engine, tables)
    assert runner.backfill(*early).ok
    second = snapshot(engine, tables)
    for name in (*RESULTS, "lstm_scheduler_checkpoint"):
        _same(second[name], first[name], name)
    _same(second["lstm_scheduler_checkpoint"], live["lstm_scheduler_checkpoint"], "checkpoint")
    detailed = first["lstm_predictions_detailed"]
    in_early = detailed[(detailed["window_end"] >= early[0]) & (detailed["window_end"] <= early[1])]
    assert len(in_early) == 3 * (90 * 2 + 1), "every row of the range ends a window"
    summary = second["lstm_batch_summary"].query("mode == 'backfill'")
    repeated = summary[summary["range_start"] == early[0]].drop(columns=["range_start"]).reset_index(drop=True)
    _same(repeated.iloc[0::2].reset_index(drop=True), repeated.iloc[1::2].reset_index(drop=True), "summary")
    engine.dispose()


def test_advance_checkpoint_moves_it_forward_only(fleet, tmp_path):
    config = write_config(tmp_path / "eo.toml")
    settings = fleet.settings(f"sqlite:///{tmp_path / 'bf.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    rows = fleet.live(2.0)
    append(engine, tables, rows)
    runner = Runner(settings, engine, fleet.bundle)
    assert runner.backfill(TRAIN_END, TRAIN_END + timedelta(hours=1), advance_checkpoint=True).ok
    moved = snapshot(engine, tables)["lstm_scheduler_checkpoint"]["last_timestamp"]
    assert (moved == TRAIN_END + timedelta(hours=1)).all()
    assert runner.backfill(TRAIN_END, TRAIN_END + timedelta(minutes=30), advance_checkpoint=True).ok
    assert (snapshot(engine, tables)["lstm_scheduler_checkpoint"]["last_timestamp"] == TRAIN_END + timedelta(hours=1)).all()
    run_live(settings, engine, fleet.bundle)
    reference = fleet.settings(f"sqlite:///{tmp_path / 'reference.sqlite'}", config)
    ref_engine, ref_tables = prepared(reference.db_url, reference)
    append(ref_engine, ref_tables, rows)
    run_live(reference, ref_engine, fleet.bundle)
    got, expected = snapshot(engine, tables), snapshot(ref_engine, ref_tables)
    for name in (*RESULTS, "lstm_scheduler_checkpoint"):
        _same(got[name], expected[name], name)
    engine.dispose()
    ref_engine.dispose()


@pytest.mark.parametrize("kind", ("sqlite", "postgresql"))
def test_backfill_next_to_a_live_run_leaves_no_duplicates(fleet, kind, tmp_path):
    """`backfill` and `run --once` started together: whichever takes a compressor first, the other waits
    (backfill) or skips it (live, done by the next run); the tables equal those of the two run in turn."""
    config = write_config(tmp_path / "eo.toml", scheduler={"lease_seconds": 120.0})
    rows = fleet.live(3.0)
    reference = fleet.settings(f"sqlite:///{tmp_path / 'reference.sqlite'}", config)
    ref_engine, ref_tables = prepared(reference.db_url, reference)
    append(ref_engine, ref_tables, rows)
    run_live(reference, ref_engine, fleet.bundle)
    # Start where no compressor is inside an anomaly run, so the backfill's own summary row does not
    # depend on whether the live run stored the window before it yet.
    detailed = snapshot(ref_engine, ref_tables)["lstm_predictions_detailed"]
    quiet = detailed.groupby("window_end")["consecutive_count"].max() == 0
    begin = quiet[quiet & (quiet.index >= TRAIN_END + timedelta(minutes=20))].index[0] + timedelta(seconds=30)
    span = (begin.to_pydatetime(), TRAIN_END + timedelta(hours=2))
    assert Runner(reference, ref_engine, fleet.bundle).backfill(*span).ok
    with database(kind, tmp_path) as url:
        settings = fleet.settings(url, config)
        engine, tables = prepared(url, settings)
        try:
            append(engine, tables, rows)
            scheduler = Scheduler(config, url, fleet.model_dir, tmp_path / "logs")
            backfill = scheduler.start("backfill", "--start", span[0].isoformat(), "--end", span[1].isoformat(), name="backfill")
            live = scheduler.start("run", "--once", name="live")
            codes = [process.wait(timeout=600) for process, _ in (backfill, live)]
            assert codes == [0, 0], "\n".join(log.read_text()[-2000:] for _, log in (backfill, live))
            run_live(settings, engine, fleet.bundle)  # scores what the live run skipped while the backfill held it
            stored = snapshot(engine, tables)
            assert not stored["lstm_predictions_detailed"].duplicated(["compressor_id", "window_end", "model_version"]).any()
            assert_same_tables(stored, snapshot(ref_engine, ref_tables))
            assert not leases_held(engine, tables)
        finally:
            engine.dispose()
            ref_engine.dispose()
