"""Exactly-once: whatever kills or disconnects the scheduler, the result tables end up as a run without failures left them.

The scheduler runs as a real subprocess (`run_scheduler.py ... run --once`). Fault points are hit
deterministically through COMPRESSOR_AD_CRASH_AT (core/faults.py) and at random times with a
plain SIGKILL; after every kill the scheduler is restarted (once the dead holder's leases ran out)
until a run finishes. Data arrives in several appends, so every checkpoint moves several times.
"""
from __future__ import annotations

import random
import signal
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from db_servers import database
from scheduler_harness import (
    TRAIN_END,
    Scheduler,
    append,
    assert_same_tables,
    killed,
    leases_held,
    prepared,
    run_live,
    snapshot,
    trained_small_fleet,
    wait_for_leases_to_expire,
    wait_for_line,
    write_config,
)

KINDS = ("sqlite", "postgresql")
KILL_PHASES = ("read", "infer", "write", "commit", "release")
APPENDS_H = (1.0, 2.25, 3.0, 4.0)  # each append brings the rows up to this many hours after training


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return trained_small_fleet(tmp_path_factory.getbasetemp() / "small_fleet")


def _chunks(fleet):
    previous = 0.0
    for hours in APPENDS_H:
        rows = fleet.live(hours)
        yield rows.loc[rows["timestamp"] > TRAIN_END + timedelta(hours=previous)]
        previous = hours


def _pending(engine, tables, appended: pd.DataFrame) -> int:
    """Compressors whose checkpoint has not reached their latest row."""
    with engine.connect() as conn:
        done = dict(conn.execute(sa.select(tables.checkpoint.c.compressor_id, tables.checkpoint.c.last_timestamp)).all())
    latest = appended.groupby("compressor_id")["timestamp"].max()
    return sum(1 for cid, last in latest.items() if done.get(cid) is None or pd.Timestamp(done[cid]) < last)


def _hook_kill(scheduler: Scheduler, phase: str, pending: int, rng: random.Random) -> tuple[str, int, str]:
    """One run killed at the n-th pass through `phase` (every compressor passes read and release,
    only those with new rows pass infer, write and commit)."""
    passes = 3 if phase in ("read", "release") else pending
    if passes == 0:
        phase, passes = "read", 3
    code, log = scheduler.run("run", "--once", crash_at=f"{phase}:{rng.randint(1, passes)}")
    assert killed(code), f"the run was not killed at {phase} (exit {code}):\n{log[-3000:]}"
    assert f"injected fault: kill at {phase}" in log
    return phase, code, log


def _timed_kill(scheduler: Scheduler, rng: random.Random) -> tuple[str, int, str]:
    """One run killed at a random moment after it started its compressors."""
    process, log = scheduler.start("run", "--once", name="timed")
    try:
        assert wait_for_line(process, log, " compressors on "), log.read_text()[-3000:]
        time.sleep(rng.uniform(0.0, 1.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        code = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    return "time", code, log.read_text()


def _kill_until_done(fleet, kind: str, folder) -> Counter:
    """Every run of the scheduler killed (hook or timed) and restarted, over several appends; the
    tables are then compared with a failure-free reference. Returns the kills by phase."""
    rng = random.Random(f"exactly-once-{kind}")
    config = write_config(folder / "eo.toml")
    reference = fleet.settings(f"sqlite:///{folder / 'reference.sqlite'}", config)
    ref_engine, ref_tables = prepared(reference.db_url, reference)
    kills: Counter = Counter()
    with database(kind, folder) as url:
        settings = fleet.settings(url, config)
        engine, tables = prepared(url, settings)
        scheduler = Scheduler(config, url, fleet.model_dir, folder / "logs")
        appended = []
        try:
            for chunk in _chunks(fleet):
                appended.append(chunk)
                append(engine, tables, chunk)
                append(ref_engine, ref_tables, chunk)
                run_live(reference, ref_engine, fleet.bundle)
                plan = [*KILL_PHASES, "time"]
                rng.shuffle(plan)
                for phase in plan:
                    wait_for_leases_to_expire(engine, tables)
                    if phase == "time":
                        phase, code, log = _timed_kill(scheduler, rng)
                    else:
                        phase, code, log = _hook_kill(scheduler, phase, _pending(engine, tables, pd.concat(appended)), rng)
                    if killed(code):
                        kills[phase] += 1
                    else:
                        assert code == 0, log[-3000:]
                wait_for_leases_to_expire(engine, tables)
                code, log = scheduler.run("run", "--once")
                assert code == 0, log[-3000:]
                assert _pending(engine, tables, pd.concat(appended)) == 0
                assert not leases_held(engine, tables)
            assert_same_tables(snapshot(engine, tables), snapshot(ref_engine, ref_tables))
        finally:
            engine.dispose()
            ref_engine.dispose()
    return kills


@pytest.fixture(scope="module")
def kill_sequences(fleet, tmp_path_factory) -> dict[str, Future]:
    """Both databases' kill sequences, run side by side: each restart is mostly a new process's
    start-up on one core, so the two overlap well on two cores."""
    with ThreadPoolExecutor(len(KINDS)) as pool:
        return {kind: pool.submit(_kill_until_done, fleet, kind, tmp_path_factory.mktemp(f"kills_{kind}")) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_at_any_moment_leaves_exactly_the_reference_rows(kill_sequences, kind):
    kills = kill_sequences[kind].result()  # re-raises that database's failure
    print(f"{kind}: {sum(kills.values())} kills by phase {dict(sorted(kills.items()))}")
    assert sum(kills.values()) >= 20, kills
    assert set(KILL_PHASES) <= set(kills), kills


@pytest.mark.parametrize("kind", KINDS)
def test_a_dropped_connection_is_retried_and_the_run_equals_the_reference(fleet, kind, tmp_path):
    """PostgreSQL: the batch's backend is terminated from a second connection; SQLite: a connection
    loss is raised. Once at the first write, once just before the third commit."""
    config = write_config(tmp_path / "eo.toml")
    reference = fleet.settings(f"sqlite:///{tmp_path / 'reference.sqlite'}", config)
    ref_engine, ref_tables = prepared(reference.db_url, reference)
    rows = fleet.live(1.5)
    append(ref_engine, ref_tables, rows)
    run_live(reference, ref_engine, fleet.bundle)
    with database(kind, tmp_path) as url:
        engine, tables = prepared(url, fleet.settings(url, config))
        try:
            append(engine, tables, rows)
            code, log = Scheduler(config, url, fleet.model_dir, tmp_path / "logs").run(
                "run", "--once", crash_at="write:1:disconnect,commit:3:disconnect"
            )
            assert code == 0, log[-3000:]
            assert "injected fault: disconnect at write #1" in log and "injected fault: disconnect at commit #3" in log
            # Two faults, two retries (compressors run side by side on a server, so both may hit one compressor).
            assert log.count("transient database error (attempt ") == 2, log[-3000:]
            if kind == "postgresql":
                assert "terminat" in log or "closed" in log  # the server's own words for the lost connection
            assert_same_tables(snapshot(engine, tables), snapshot(ref_engine, ref_tables))
        finally:
            engine.dispose()
            ref_engine.dispose()


def test_a_permanent_error_exits_non_zero_and_rolls_the_batch_back(fleet, tmp_path):
    config = write_config(tmp_path / "eo.toml")
    url = f"sqlite:///{tmp_path / 'run.sqlite'}"
    engine, tables = prepared(url, fleet.settings(url, config))
    reference = fleet.settings(f"sqlite:///{tmp_path / 'reference.sqlite'}", config)
    ref_engine, ref_tables = prepared(reference.db_url, reference)
    rows = fleet.live(1.0)
    append(engine, tables, rows)
    append(ref_engine, ref_tables, rows)
    run_live(reference, ref_engine, fleet.bundle)
    scheduler = Scheduler(config, url, fleet.model_dir, tmp_path / "logs")
    code, log = scheduler.run("run", "--once", crash_at="commit:2:error")
    assert code == 1
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "failed for compressor(s): C02" in errors[0]
    assert "permanent error injected at commit" in log, "the reason reaches the log"
    assert "transient" not in log, "a permanent error must not be retried"
    stored = snapshot(engine, tables)
    checkpoints = stored["lstm_scheduler_checkpoint"].set_index("compressor_id")["last_timestamp"]
    for cid in ("C01", "C03"):  # one compressor's failure does not stop the others
        assert checkpoints[cid] == rows.loc[rows["compressor_id"] == cid, "timestamp"].max()
    assert pd.isna(checkpoints["C02"]), "the failed batch's checkpoint must stay where it was"
    assert set(stored["lstm_predictions_detailed"]["compressor_id"]) == {"C01", "C03"}
    summary = stored["lstm_batch_summary"].set_index("compressor_id")["status"]
    assert summary.to_dict() == {"C01": "ok", "C02": "failed", "C03": "ok"}
    code, log = scheduler.run("run", "--once")
    assert code == 0, log[-3000:]
    after = snapshot(engine, tables)
    expected = snapshot(ref_engine, ref_tables)
    compared = ("lstm_predictions_detailed", "anomaly_detection_results", "lstm_scheduler_checkpoint")
    assert_same_tables({n: after[n] for n in compared}, {n: expected[n] for n in compared})
    ok = after["lstm_batch_summary"].query("status == 'ok'").reset_index(drop=True)
    pd.testing.assert_frame_equal(ok, expected["lstm_batch_summary"], check_dtype=False, rtol=1e-9)
    engine.dispose()
    ref_engine.dispose()


def test_sigterm_stops_the_daemon_cleanly(fleet, tmp_path):
    """SIGTERM while the daemon scores: the batch in flight commits, the process exits 0, the rest is done next run."""
    config = write_config(tmp_path / "eo.toml")
    url = f"sqlite:///{tmp_path / 'run.sqlite'}"
    engine, tables = prepared(url, fleet.settings(url, config))
    reference = fleet.settings(f"sqlite:///{tmp_path / 'reference.sqlite'}", config)
    ref_engine, ref_tables = prepared(reference.db_url, reference)
    rows = fleet.live(2.0)
    append(engine, tables, rows)
    append(ref_engine, ref_tables, rows)
    run_live(reference, ref_engine, fleet.bundle)
    scheduler = Scheduler(config, url, fleet.model_dir, tmp_path / "logs")
    process, log = scheduler.start("run", "--interval", "60", name="daemon")
    try:
        assert wait_for_line(process, log, "compressor C01 [live] ok")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "stop requested" in text and "daemon stopped after 1 runs" in text
    stored, expected = snapshot(engine, tables), snapshot(ref_engine, ref_tables)
    done = set(stored["lstm_batch_summary"]["compressor_id"])
    assert "C01" in done and not leases_held(engine, tables)
    names = ("lstm_predictions_detailed", "anomaly_detection_results", "lstm_batch_summary")
    # the daemon scores through the compiled graph, the in-process reference in NumPy: the same to float32 rounding
    assert_same_tables({n: stored[n] for n in names}, {n: expected[n][expected[n]["compressor_id"].isin(done)].reset_index(drop=True) for n in names})
    code, out = scheduler.run("run", "--once")
    assert code == 0, out[-3000:]
    assert_same_tables(snapshot(engine, tables), expected)
    engine.dispose()
    ref_engine.dispose()


def test_an_anomaly_run_split_over_two_batches_triggers_as_in_one(fleet, tmp_path):
    """Rows in two halves, two runs == one run over all rows: scores, counts, triggers, checkpoint and summary totals."""
    config = write_config(tmp_path / "eo.toml")
    whole = fleet.settings(f"sqlite:///{tmp_path / 'whole.sqlite'}", config)
    one_engine, one_tables = prepared(whole.db_url, whole)
    rows = fleet.live(4.0)
    append(one_engine, one_tables, rows)
    run_live(whole, one_engine, fleet.bundle)
    one = snapshot(one_engine, one_tables)
    detailed = one["lstm_predictions_detailed"]
    # Split inside an anomaly run: after a window whose run goes on in the next window.
    following = detailed.groupby("compressor_id")["consecutive_count"].shift(-1)
    inside = detailed[(detailed["consecutive_count"] >= 1) & (following > detailed["consecutive_count"]) & detailed["in_alert"].astype(bool)]
    assert len(inside), "the fleet must contain anomaly runs of at least two windows inside an alert episode"
    assert detailed["triggered"].astype(bool).any(), "the fleet must open an episode"
    split = inside.iloc[len(inside) // 2]
    halves = fleet.settings(f"sqlite:///{tmp_path / 'halves.sqlite'}", config)
    two_engine, two_tables = prepared(halves.db_url, halves)
    append(two_engine, two_tables, rows[rows["timestamp"] <= split["window_end"]])
    run_live(halves, two_engine, fleet.bundle)
    append(two_engine, two_tables, rows[rows["timestamp"] > split["window_end"]])
    run_live(halves, two_engine, fleet.bundle)
    two = snapshot(two_engine, two_tables)
    compared = ("lstm_predictions_detailed", "anomaly_detection_results", "lstm_scheduler_checkpoint")
    # two batches score a window in other matrix shapes than one: the same to float32 round-off
    assert_same_tables({n: two[n] for n in compared}, {n: one[n] for n in compared})
    carried = two["lstm_predictions_detailed"].set_index(["compressor_id", "window_end"]).loc[split["compressor_id"]]
    next_end = carried.index[carried.index.get_loc(split["window_end"]) + 1]
    assert carried.loc[next_end, "consecutive_count"] == split["consecutive_count"] + 1, "the run's count carried over the batch boundary"
    totals = ["rows_read", "windows_scored", "anomaly_points", "triggered_events", "rows_rejected", "gaps"]
    assert two["lstm_batch_summary"].groupby("compressor_id")[totals].sum().equals(one["lstm_batch_summary"].groupby("compressor_id")[totals].sum())
    one_engine.dispose()
    two_engine.dispose()
