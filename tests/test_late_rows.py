"""Rows that arrive late beyond the lateness allowance: counted per day, reported once with the backfill
that scores them, never silently dropped (pipeline/lateness.py). Real databases: SQLite, PostgreSQL, MariaDB.
"""
from __future__ import annotations

import json
import logging
import re
import shlex
from datetime import datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from core.settings import Settings
from db.day_counts import read_day_counts
from db.engine import make_engine
from db.schema import build_tables, create_all
from db.source import rows_per_day, write_telemetry
from db_servers import KINDS, database
from pipeline.lateness import count_rows, store_counts
from scheduler.cli import main
from scheduler.runner import Runner
from scheduler_harness import (
    INTERVAL,
    TRAIN_END,
    Scheduler,
    append,
    assert_same_tables,
    killed,
    prepared,
    run_live,
    snapshot,
    trained_small_fleet,
    wait_for_leases_to_expire,
    write_config,
)

STATE = ("lstm_predictions_detailed", "anomaly_detection_results", "lstm_scheduler_checkpoint", "lstm_source_day_counts")
COMMAND = re.compile(r"score them with: python run_scheduler\.py (backfill .*)$")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return trained_small_fleet(tmp_path_factory.getbasetemp() / "small_fleet")



def _at(rows: pd.DataFrame, after: timedelta, count: int) -> pd.Series:
    """Mask of `count` consecutive timestamps (every compressor) starting `after` the end of training."""
    first = TRAIN_END + after
    return (rows["timestamp"] >= first) & (rows["timestamp"] < first + count * INTERVAL)


def _before(rows: pd.DataFrame, hours: float) -> pd.Series:
    return rows["timestamp"] <= TRAIN_END + timedelta(hours=hours)


def _summary(engine, tables) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(sa.select(tables.summary).order_by(tables.summary.c.id)).mappings().all())
    frame["reasons"] = frame["rejection_reasons"].map(lambda text: json.loads(text) if isinstance(text, str) else {})
    return frame


def _late_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "arrived late" in r.getMessage()]


def _range(command: list[str]) -> tuple[datetime, datetime]:
    return tuple(datetime.fromisoformat(command[command.index(option) + 1]) for option in ("--start", "--end"))


def _per_day_counts(statements: list[str]) -> list[str]:
    """The per-day counts (db.source.rows_per_day) among the captured statements."""
    return [s for s in statements if "GROUP BY" in s and ("AS DATE)" in s or "GROUP BY date(" in s)]


@pytest.mark.parametrize("kind", KINDS)
def test_rows_far_beyond_the_allowance_are_reported_once_and_scored_by_the_suggested_backfill(fleet, kind, tmp_path, caplog):
    config = write_config(tmp_path / "late.toml")  # lateness allowance 30 min
    rows = fleet.live(3.5)
    far = _at(rows, timedelta(minutes=30), 4)  # 2.5 h before the checkpoint at 3 h: five allowances back
    near = _at(rows, timedelta(hours=2, minutes=40), 4)  # 20 min before it: within the allowance
    reference = fleet.settings(f"sqlite:///{tmp_path / 'reference.sqlite'}", config)
    ref_engine, ref_tables = prepared(reference.db_url, reference)
    append(ref_engine, ref_tables, rows)
    run_live(reference, ref_engine, fleet.bundle)
    with database(kind, tmp_path) as url:
        settings = fleet.settings(url, config)
        engine, tables = prepared(url, settings)
        try:
            append(engine, tables, rows[_before(rows, 3.0) & ~far & ~near])
            run_live(settings, engine, fleet.bundle)
            append(engine, tables, rows[far | near | ~_before(rows, 3.0)])
            with caplog.at_level(logging.WARNING):
                run_live(settings, engine, fleet.bundle)
            warnings = _late_warnings(caplog)
            summary = _summary(engine, tables)
            last = summary.groupby("compressor_id").last()
            assert (last["reasons"].map(lambda r: (r.get("late_beyond_allowance"), r.get("late_within_allowance"))) == (4, 13)).all()
            assert (last["message"] == pd.Series(sorted(warnings), index=last.index)).all(), "the report is kept in the summary"
            assert len(warnings) == 3
            for cid, warning in zip(("C01", "C02", "C03"), sorted(warnings)):
                assert warning.startswith(f"compressor {cid}: 4 rows arrived late") and f"--compressor {cid}" in warning
            detailed = snapshot(engine, tables)["lstm_predictions_detailed"]
            far_start = TRAIN_END + timedelta(minutes=30)
            assert not detailed["window_end"].between(far_start, far_start + 12 * INTERVAL).any(), "not scored by a live run"
            with engine.connect() as conn:
                assert conn.execute(sa.select(sa.func.count()).select_from(tables.source)).scalar_one() == len(rows), "rows kept"

            caplog.clear()
            with caplog.at_level(logging.WARNING):
                run_live(settings, engine, fleet.bundle)
            assert not _late_warnings(caplog) and len(_summary(engine, tables)) == len(summary), "reported once"

            counts = snapshot(engine, tables)["lstm_source_day_counts"]
            commands = [shlex.split(COMMAND.search(w).group(1)) for w in sorted(warnings)]
            base = ["--config", str(config), "--db-url", url, "--model-dir", str(fleet.model_dir)]
            for command in commands:
                assert main([*base, *command]) == 0
            stored = snapshot(engine, tables)
            pd.testing.assert_frame_equal(stored["lstm_source_day_counts"], counts, obj="a backfill leaves the counts alone")
            (start, end), = {_range(command) for command in commands}
            assert start <= far_start and end >= far_start + 13 * INTERVAL
            assert Runner(reference, ref_engine, fleet.bundle).backfill(start, end).ok
            expected = snapshot(ref_engine, ref_tables)
            assert_same_tables({n: stored[n] for n in STATE}, {n: expected[n] for n in STATE})
        finally:
            engine.dispose()
            ref_engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_is_reported_and_no_history_is_scanned_when_no_row_is_late(fleet, kind, tmp_path, caplog):
    config = write_config(tmp_path / "late.toml")
    rows = fleet.live(3.0)
    with database(kind, tmp_path) as url:
        settings = fleet.settings(url, config)
        engine, tables = prepared(url, settings)
        statements: list[str] = []
        try:
            for hours in (1.0, 2.0, 3.0):
                append(engine, tables, rows[_before(rows, hours) & ~_before(rows, hours - 1.0)])
                with caplog.at_level(logging.WARNING):
                    run_live(settings, engine, fleet.bundle)
                if hours == 1.0:  # the first run counts the whole history once; later runs only compare
                    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: statements.append(statement))
            run_live(settings, engine, fleet.bundle)  # nothing new at all
            summary = _summary(engine, tables)
            assert not _late_warnings(caplog)
            assert len(summary) == 9 and (summary["status"] == "ok").all()
            assert not any("late" in key for reasons in summary["reasons"] for key in reasons)
            per_day = _per_day_counts(statements)
            assert per_day and all(">=" in s for s in per_day), "only the days from the stored edge on are counted"
            counts = snapshot(engine, tables)["lstm_source_day_counts"]
            with engine.connect() as conn:
                through = conn.execute(sa.select(sa.func.max(tables.checkpoint.c.last_timestamp))).scalar_one() - timedelta(minutes=30)
                expected = conn.execute(
                    sa.select(sa.func.count()).select_from(tables.source).where(tables.source.c.timestamp <= through)
                ).scalar_one()
            assert counts["row_count"].sum() == expected and (counts["counted_through"] == through).all()
        finally:
            engine.dispose()


def test_a_backfill_that_advances_the_checkpoint_reports_nothing_later(fleet, tmp_path, caplog):
    config = write_config(tmp_path / "late.toml")
    settings = fleet.settings(f"sqlite:///{tmp_path / 'late.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    rows = fleet.live(4.0)
    append(engine, tables, rows[_before(rows, 1.0)])
    run_live(settings, engine, fleet.bundle)
    counts = snapshot(engine, tables)["lstm_source_day_counts"]
    append(engine, tables, rows[~_before(rows, 1.0)])
    runner = Runner(settings, engine, fleet.bundle)
    assert runner.backfill(TRAIN_END + timedelta(hours=1), TRAIN_END + timedelta(hours=3), advance_checkpoint=True).ok
    pd.testing.assert_frame_equal(snapshot(engine, tables)["lstm_source_day_counts"], counts)
    with caplog.at_level(logging.WARNING):
        run_live(settings, engine, fleet.bundle)
    assert not _late_warnings(caplog)
    assert not any("late" in key for reasons in _summary(engine, tables)["reasons"] for key in reasons)
    engine.dispose()


def test_an_upgraded_database_starts_counting_at_its_next_run(fleet, tmp_path, caplog):
    """A database from before the day counts: the first run counts (it cannot know what came late
    before); late rows after that are reported."""
    config = write_config(tmp_path / "late.toml")
    settings = fleet.settings(f"sqlite:///{tmp_path / 'late.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    rows = fleet.live(3.0)
    first, second = _at(rows, timedelta(minutes=30), 4), _at(rows, timedelta(hours=1), 4)
    append(engine, tables, rows[_before(rows, 2.0) & ~first & ~second])
    run_live(settings, engine, fleet.bundle)
    with engine.begin() as conn:
        conn.execute(sa.schema.DropTable(tables.day_counts))
    append(engine, tables, rows[first | (_before(rows, 2.5) & ~_before(rows, 2.0))])
    with caplog.at_level(logging.WARNING):
        run_live(settings, engine, fleet.bundle)  # creates the table again, finds no counts to compare with
    assert not _late_warnings(caplog)
    append(engine, tables, rows[second | ~_before(rows, 2.5)])
    with caplog.at_level(logging.WARNING):
        run_live(settings, engine, fleet.bundle)
    assert [w.split(":")[0] for w in _late_warnings(caplog)] == ["compressor C01", "compressor C02", "compressor C03"]
    assert all(": 4 rows arrived late" in w for w in _late_warnings(caplog))
    engine.dispose()


def test_a_replay_after_a_crash_reports_the_late_rows_once(fleet, tmp_path):
    """Killed just before the commit of the batch that reports late rows, restarted: the result tables,
    the batch summary included, equal those of a run without the crash."""
    config = write_config(tmp_path / "late.toml")
    rows = fleet.live(3.0)
    far = _at(rows, timedelta(minutes=30), 4)
    tables_by_run = {}
    for name, crash in (("reference", None), ("crashed", "commit:2")):
        url = f"sqlite:///{tmp_path / f'{name}.sqlite'}"
        engine, tables = prepared(url, fleet.settings(url, config))
        append(engine, tables, rows[_before(rows, 2.0) & ~far])
        run_live(fleet.settings(url, config), engine, fleet.bundle)
        append(engine, tables, rows[far | ~_before(rows, 2.0)])
        scheduler = Scheduler(config, url, fleet.model_dir, tmp_path / "logs")
        if crash:
            code, log = scheduler.run("run", "--once", crash_at=crash)
            assert killed(code) and "injected fault: kill at commit" in log
            wait_for_leases_to_expire(engine, tables)
        code, log = scheduler.run("run", "--once")
        assert code == 0, log[-3000:]
        tables_by_run[name] = snapshot(engine, tables)
        engine.dispose()
    assert_same_tables(tables_by_run["crashed"], tables_by_run["reference"])
    reasons = tables_by_run["crashed"]["lstm_batch_summary"]["rejection_reasons"].dropna().map(json.loads)
    assert list(reasons) == [{"late_beyond_allowance": 4}] * 3


def _telemetry(settings: Settings, stamps: list[datetime]) -> pd.DataFrame:
    frame = pd.DataFrame({"timestamp": stamps, "compressor_id": "C01"})
    for feature in settings.data.features:
        frame[feature] = 1.0
    return frame


@pytest.mark.parametrize("kind", KINDS)
def test_counts_find_late_rows_on_every_day_and_follow_the_edge(kind, tmp_path):
    """Three days of hourly rows; late rows on two earlier days are found day by day, once; a
    larger allowance (the edge moving back) recounts every day."""
    settings = Settings(db_url="sqlite://")
    day = datetime(2026, 3, 1)
    hourly = [day + timedelta(hours=h) for h in range(72)]
    late = [day + timedelta(hours=5, minutes=30), day + timedelta(hours=6, minutes=30), day + timedelta(days=1, hours=3, minutes=30)]
    with database(kind, tmp_path) as url:
        engine, tables = make_engine(url), build_tables(settings)

        def count(through: datetime):
            with engine.begin() as conn:
                counts = count_rows(conn, tables, settings, "C01", through)
                store_counts(conn, tables, "C01", counts)
                return counts, rows_per_day(conn, tables, settings, "C01", None, through), read_day_counts(conn, tables, "C01")

        try:
            create_all(engine, tables)
            write_telemetry(engine, tables, _telemetry(settings, hourly[:40]))
            first, now, stored = count(day + timedelta(hours=30))
            assert not first.late and stored == now == {day: 24, day + timedelta(days=1): 7}
            write_telemetry(engine, tables, _telemetry(settings, late + hourly[40:]))
            second, now, stored = count(day + timedelta(hours=50))
            assert second.late == {day: 2, day + timedelta(days=1): 1} and second.late_rows == 3
            assert stored == now == {day: 26, day + timedelta(days=1): 25, day + timedelta(days=2): 3}
            report = second.report("C01", settings, 30)
            assert "3 rows arrived late" in report and f"between {day} and {day + timedelta(hours=30)} (2 day(s))" in report
            assert report.endswith(f"backfill --start {day.isoformat()} --end {(day + timedelta(hours=30, minutes=45)).isoformat()} --compressor C01")
            third, now, stored = count(day + timedelta(hours=60))
            assert not third.late and third.since == day + timedelta(days=2) and stored == now
            back, now, stored = count(day + timedelta(hours=20))
            assert not back.late and back.since is None and stored == now == {day: 23}
        finally:
            engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_rows_per_day_splits_at_utc_midnight(kind, tmp_path):
    settings = Settings(db_url="sqlite://")
    stamps = [datetime(2026, 3, 1, 23, 59, 59, 999999), datetime(2026, 3, 2), datetime(2026, 3, 2, 12), datetime(2026, 3, 2, 23, 59, 30),
              datetime(2026, 3, 3), datetime(2026, 3, 3, 0, 0, 30), datetime(2026, 3, 4, 6)]
    with database(kind, tmp_path) as url:
        engine, tables = make_engine(url), build_tables(settings)
        try:
            create_all(engine, tables)
            write_telemetry(engine, tables, _telemetry(settings, stamps))
            with engine.connect() as conn:
                whole = rows_per_day(conn, tables, settings, "C01", None, datetime(2026, 3, 3, 0, 0, 30))
                part = rows_per_day(conn, tables, settings, "C01", datetime(2026, 3, 2), datetime(2026, 3, 4))
        finally:
            engine.dispose()
    assert whole == {datetime(2026, 3, 1): 1, datetime(2026, 3, 2): 3, datetime(2026, 3, 3): 2}
    assert part == {datetime(2026, 3, 2): 3, datetime(2026, 3, 3): 2}
