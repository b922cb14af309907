"""A lease whose holder died on this host is taken over at once; a live or remote holder's lease is a
WARNING naming it and its expiry, and `status` shows it."""
from __future__ import annotations

import logging
import socket
import subprocess
import sys
from datetime import timedelta

import sqlalchemy as sa
import pytest

from core.clock import utcnow
from scheduler import lease
from scheduler.status import fleet_status, format_status
from scheduler_harness import Scheduler, append, killed, leases_held, prepared, run_live, snapshot, trained_small_fleet, write_config


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return trained_small_fleet(tmp_path_factory.getbasetemp() / "small_fleet")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def hold(engine, tables, cid: str, owner: str, seconds: float) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(tables.checkpoint).where(tables.checkpoint.c.compressor_id == cid).values(lease_owner=owner, lease_expires_at=utcnow() + timedelta(seconds=seconds)))


def test_holder_gone_only_for_a_missing_process_of_this_host():
    host = socket.gethostname()
    assert lease.holder_gone(f"{host}:{dead_pid()}:abcd1234")
    assert not lease.holder_gone(f"{host}:{subprocess.os.getppid()}:abcd1234")  # alive
    assert not lease.holder_gone(f"another-host-{host}:{dead_pid()}:abcd1234")  # cannot be checked from here
    assert not lease.holder_gone(None) and not lease.holder_gone("garbage") and not lease.holder_gone(f"{host}:x:1")
    assert len(lease.make_owner_id()) <= 100


def test_a_dead_local_holder_is_taken_over_and_a_live_one_is_a_warning(fleet, tmp_path, caplog):
    config = write_config(tmp_path / "eo.toml", scheduler={"lease_seconds": 600.0})
    settings = fleet.settings(f"sqlite:///{tmp_path / 'lease.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    append(engine, tables, fleet.live(1.0))
    host = socket.gethostname()
    dead, alive = f"{host}:{dead_pid()}:deadbeef", f"{host}:{subprocess.os.getppid()}:a11ve000"
    run_live(settings, engine, fleet.bundle)  # creates the checkpoint rows
    append(engine, tables, fleet.live(1.5)[lambda f: f["timestamp"] > snapshot(engine, tables)["lstm_scheduler_checkpoint"]["last_timestamp"].max()])
    hold(engine, tables, "C01", dead, 600)
    hold(engine, tables, "C02", alive, 600)
    with caplog.at_level(logging.INFO):
        run_live(settings, engine, fleet.bundle)
    summary = snapshot(engine, tables)["lstm_batch_summary"]
    assert sorted(summary["compressor_id"]) == ["C01", "C01", "C02", "C03", "C03"]
    took_over = [r for r in caplog.records if "took over the lease" in r.getMessage()]
    assert [r.levelno for r in took_over] == [logging.WARNING] and dead in took_over[0].getMessage()
    skipped = [r for r in caplog.records if "C02 [live] leased by" in r.getMessage()]
    assert [r.levelno for r in skipped] == [logging.WARNING]
    assert alive in skipped[0].getMessage() and "UTC: skipped this run" in skipped[0].getMessage()
    rows = fleet_status(engine, tables, settings)
    shown = {r["compressor_id"]: r["lease"] for r in rows}
    assert shown["C01"] is None and shown["C03"] is None and shown["C02"]["owner"] == alive
    assert f"{alive} until " in format_status(rows).splitlines()[3]
    engine.dispose()


def test_a_run_killed_mid_batch_is_followed_at_once(fleet, tmp_path):
    """SIGKILL inside a batch (lease held, 600 s left), then an immediate `run --once` scores everything."""
    config = write_config(tmp_path / "eo.toml", scheduler={"lease_seconds": 600.0})
    url = f"sqlite:///{tmp_path / 'killed.sqlite'}"
    engine, tables = prepared(url, fleet.settings(url, config))
    append(engine, tables, fleet.live(1.0))
    scheduler = Scheduler(config, url, fleet.model_dir, tmp_path / "logs")
    code, _ = scheduler.run("run", "--once", crash_at="infer:1:kill")
    assert killed(code) and leases_held(engine, tables), "the killed run left its lease behind"
    code, output = scheduler.run("run", "--once")
    assert code == 0, output
    assert "took over the lease" in output
    assert sorted(snapshot(engine, tables)["lstm_batch_summary"]["compressor_id"]) == ["C01", "C02", "C03"]
    assert not leases_held(engine, tables)
    engine.dispose()
