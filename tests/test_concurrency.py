"""Two schedulers on one database never process one compressor at once; a dead holder's lease expires."""
from __future__ import annotations

import logging
from datetime import timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from db_servers import database
from core.clock import utcnow
from scheduler import lease
from scheduler.runner import Runner
from scheduler_harness import Scheduler, append, assert_same_tables, leases_held, prepared, run_live, snapshot, trained_small_fleet, write_config

KINDS = ("sqlite", "postgresql")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return trained_small_fleet(tmp_path_factory.getbasetemp() / "small_fleet")


@pytest.mark.parametrize("kind", KINDS)
def test_two_schedulers_at_once_score_every_window_exactly_once(fleet, kind, tmp_path):
    config = write_config(tmp_path / "eo.toml", scheduler={"lease_seconds": 120.0})
    reference = fleet.settings(f"sqlite:///{tmp_path / 'reference.sqlite'}", config)
    ref_engine, ref_tables = prepared(reference.db_url, reference)
    rows = fleet.live(3.0)
    append(ref_engine, ref_tables, rows)
    run_live(reference, ref_engine, fleet.bundle)
    with database(kind, tmp_path) as url:
        engine, tables = prepared(url, fleet.settings(url, config))
        try:
            append(engine, tables, rows)
            scheduler = Scheduler(config, url, fleet.model_dir, tmp_path / "logs")
            started = [scheduler.start("run", "--once", name=name) for name in ("a", "b")]
            codes = [process.wait(timeout=600) for process, _ in started]
            logs = [log.read_text() for _, log in started]
            assert codes == [0, 0], "\n".join(text[-2000:] for text in logs)
            for cid in ("C01", "C02", "C03"):
                scored_by = [text for text in logs if f"compressor {cid} [live] ok" in text]
                assert len(scored_by) == 1, f"{cid} scored by {len(scored_by)} schedulers"
            stored = snapshot(engine, tables)
            summary = stored["lstm_batch_summary"]
            assert sorted(summary["compressor_id"]) == ["C01", "C02", "C03"], "one batch per compressor"
            expected = snapshot(ref_engine, ref_tables)
            assert (summary["windows_scored"].to_numpy() == expected["lstm_batch_summary"]["windows_scored"].to_numpy()).all()
            assert not stored["lstm_predictions_detailed"].duplicated(["compressor_id", "window_end"]).any()
            assert_same_tables(stored, expected)
            assert not leases_held(engine, tables)
        finally:
            engine.dispose()
            ref_engine.dispose()



@pytest.mark.parametrize("kind", KINDS)
def test_compressors_scored_side_by_side_leave_the_tables_of_one_at_a_time(fleet, kind, tmp_path, caplog):
    """parallel_compressors = 3: three compressors in three transactions at once; same rows as one by one."""
    rows = fleet.live(3.0)
    one_config = write_config(tmp_path / "one.toml", scheduler={"parallel_compressors": 1})
    reference = fleet.settings(f"sqlite:///{tmp_path / 'reference.sqlite'}", one_config)
    ref_engine, ref_tables = prepared(reference.db_url, reference)
    append(ref_engine, ref_tables, rows)
    run_live(reference, ref_engine, fleet.bundle)
    config = write_config(tmp_path / "three.toml", scheduler={"parallel_compressors": 3})
    with database(kind, tmp_path) as url:
        settings = fleet.settings(url, config)
        engine, tables = prepared(url, settings)
        try:
            append(engine, tables, rows)
            with caplog.at_level(logging.INFO, logger="scheduler.runner"):
                report = run_live(settings, engine, fleet.bundle)
            assert "3 at a time" in caplog.text
            assert sorted(o.compressor_id for o in report.outcomes) == ["C01", "C02", "C03"]
            assert_same_tables(snapshot(engine, tables), snapshot(ref_engine, ref_tables))
            assert not leases_held(engine, tables)
        finally:
            engine.dispose()
            ref_engine.dispose()


def test_automatic_parallelism_is_one_on_sqlite_and_two_on_a_server(fleet, tmp_path):
    config = write_config(tmp_path / "auto.toml")
    for url, expected in ((f"sqlite:///{tmp_path / 'auto.sqlite'}", 1), ("postgresql+psycopg://u@127.0.0.1:1/none", 2)):
        settings = fleet.settings(url, config)
        engine = sa.create_engine(url)
        try:
            assert Runner(settings, engine, fleet.bundle).parallelism() == expected
        finally:
            engine.dispose()


def _hold(engine, tables, cid: str, owner: str, seconds: float) -> None:
    """A lease as a crashed scheduler leaves it: owner set, expiry `seconds` from now."""
    lease._ensure_row(engine, tables, cid)
    with engine.begin() as conn:
        conn.execute(
            sa.update(tables.checkpoint).where(tables.checkpoint.c.compressor_id == cid).values(lease_owner=owner, lease_expires_at=utcnow() + timedelta(seconds=seconds))
        )


def test_a_crashed_holders_lease_blocks_until_it_expires(fleet, tmp_path, caplog):
    config = write_config(tmp_path / "eo.toml", scheduler={"lease_seconds": 2.0})
    settings = fleet.settings(f"sqlite:///{tmp_path / 'lease.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    append(engine, tables, fleet.live(1.0))
    _hold(engine, tables, "C02", "crashed-host:4242:deadbeef", 600)
    with caplog.at_level(logging.INFO, logger="scheduler.runner"):
        run_live(settings, engine, fleet.bundle)
    stored = snapshot(engine, tables)
    assert sorted(stored["lstm_batch_summary"]["compressor_id"]) == ["C01", "C03"]
    assert pd.isna(stored["lstm_scheduler_checkpoint"].set_index("compressor_id").loc["C02", "last_timestamp"])
    assert "compressor C02 [live] leased by crashed-host:4242:deadbeef" in caplog.text
    _hold(engine, tables, "C02", "crashed-host:4242:deadbeef", -1)  # its time ran out
    run_live(settings, engine, fleet.bundle)
    assert sorted(snapshot(engine, tables)["lstm_batch_summary"]["compressor_id"]) == ["C01", "C02", "C03"]
    assert not leases_held(engine, tables)
    engine.dispose()


def test_a_backfill_waits_for_a_lease_and_gives_up_with_a_reason(fleet, tmp_path):
    config = write_config(tmp_path / "eo.toml", scheduler={"lease_seconds": 2.0})
    settings = fleet.settings(f"sqlite:///{tmp_path / 'lease.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    rows = fleet.live(1.0, ("C01",))
    append(engine, tables, rows)
    start, end = rows["timestamp"].min(), rows["timestamp"].max()
    runner = Runner(settings, engine, fleet.bundle)
    _hold(engine, tables, "C01", "other:1:1", 1.0)  # runs out while the backfill waits
    assert runner.backfill(start, end).ok
    _hold(engine, tables, "C01", "other:1:1", 600)  # outlives the wait
    report = runner.backfill(start, end)
    assert report.failed == ["C01"]
    failed = snapshot(engine, tables)["lstm_batch_summary"].query("status == 'failed'")
    assert "still leased by other:1:1" in failed["message"].iloc[0]
    engine.dispose()


def test_a_batch_whose_lease_was_taken_over_cannot_commit(fleet, tmp_path):
    config = write_config(tmp_path / "eo.toml")
    settings = fleet.settings(f"sqlite:///{tmp_path / 'fence.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    assert lease.acquire(engine, tables, "C01", "me", 60)
    _hold(engine, tables, "C01", "someone-else", 60)
    with pytest.raises(lease.LeaseLost), engine.begin() as conn:
        lease.confirm(conn, tables, "C01", "me", 60)
    with engine.begin() as conn:
        lease.confirm(conn, tables, "C01", "someone-else", 60)
    engine.dispose()
