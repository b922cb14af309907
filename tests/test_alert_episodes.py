"""Alert episodes: derived from the windows written, never duplicated by replay or backfill; maintenance and
stopped-mode suppression; the `alerts` and `maintenance` commands. The episode, maintenance and command
tests run on SQLite, PostgreSQL and MariaDB, each in a database of its own (tests/db_servers.py)."""
from __future__ import annotations

import json
from contextlib import ExitStack
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from db_servers import KINDS, database
from models.alarms import AlarmRule
from models.artifacts import ModelBundle
from scheduler.cli import main
from scheduler.runner import Runner
from scheduler_harness import START, TRAIN_END, append, prepared, trained_small_fleet, write_config
from tolerances import SCORE_RTOL

EPISODE_FIELDS = ["compressor_id", "model_version", "start_time", "end_time", "peak_score", "peak_at", "top_features"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return trained_small_fleet(tmp_path_factory.getbasetemp() / "small_fleet")


def touchy(bundle: ModelBundle, threshold: float = 1.0) -> ModelBundle:
    """The same detector with a low threshold and a quick rule: many short episodes."""
    return ModelBundle(bundle.detector, {c: threshold for c in bundle.thresholds}, bundle.threshold_rule, AlarmRule("consecutive", 3, quiet_windows=5), bundle.training_range, bundle.version)


def setup_db(fleet, tmp_path, name="db", extra_toml: str = "", url: str | None = None, **sections):
    """Settings, engine and created tables on `url` (default: the SQLite file `name`.sqlite), config `name`.toml."""
    config = write_config(tmp_path / f"{name}.toml", **sections)
    config.write_text(config.read_text() + extra_toml, encoding="utf-8")
    settings = fleet.settings(url or f"sqlite:///{tmp_path / (name + '.sqlite')}", config)
    engine, tables = prepared(settings.db_url, settings)
    return settings, engine, tables


@pytest.fixture
def on_database(fleet, tmp_path):
    """new(kind, name) -> setup_db on an empty database of its own (tests/db_servers.py); after the
    test its engine is disposed and the database dropped."""
    with ExitStack() as stack:

        def new(kind: str, name: str = "db", **options):
            folder = tmp_path / f"{name}-{kind}"
            folder.mkdir()
            url = stack.enter_context(database(kind, folder))
            settings, engine, tables = setup_db(fleet, tmp_path, name, url=url, **options)
            stack.callback(engine.dispose)
            return settings, engine, tables

        yield new


def episodes(engine, tables) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tables.alerts.episodes).order_by("compressor_id", "start_time")).mappings().all()
    return pd.DataFrame([dict(r) for r in rows])


def runs_in_windows(engine, tables) -> list[tuple]:
    """(compressor, start, end or None) of every in_alert run in the detailed table, by hand."""
    d = tables.detailed
    with engine.connect() as conn:
        frame = pd.read_sql(sa.select(d.c.compressor_id, d.c.window_end, d.c.in_alert).order_by(d.c.compressor_id, d.c.window_end), conn)
    out = []
    for cid, group in frame.groupby("compressor_id"):
        flags, ends = group["in_alert"].astype(bool).to_numpy(), group["window_end"].tolist()
        i = 0
        while i < len(flags):
            if flags[i]:
                j = i
                while j + 1 < len(flags) and flags[j + 1]:
                    j += 1
                out.append((cid, ends[i], ends[j] if j + 1 < len(flags) else None))
                i = j + 1
            else:
                i += 1
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_episodes_follow_windows_and_survive_replay_and_backfill(fleet, kind, on_database):
    bundle = touchy(fleet.bundle)
    settings, engine, tables = on_database(kind)
    t = fleet.telemetry
    append(engine, tables, t[t["timestamp"] <= TRAIN_END + timedelta(hours=1.5)])
    Runner(settings, engine, bundle).run_once()
    append(engine, tables, t[(t["timestamp"] > TRAIN_END + timedelta(hours=1.5)) & (t["timestamp"] <= TRAIN_END + timedelta(hours=3))])
    Runner(settings, engine, bundle).run_once()
    first = episodes(engine, tables)
    assert len(first) >= 3, "the touchy rule should open several episodes"
    got = [(r.compressor_id, r.start_time, None if pd.isna(r.end_time) else r.end_time) for r in first.itertuples()]
    assert got == runs_in_windows(engine, tables)  # one episode per in_alert run, split over two batches or not
    assert (first["state"] == "open").all()

    # A person acknowledges one; replaying the live run and overlapping backfills change nothing.
    with engine.begin() as conn:
        conn.execute(sa.update(tables.alerts.episodes).where(tables.alerts.episodes.c.id == int(first["id"].iloc[0])).values(state="acknowledged", acknowledged_by="ana", note="on it"))
    Runner(settings, engine, bundle).run_once()
    runner = Runner(settings, engine, bundle)
    runner.backfill(TRAIN_END + timedelta(seconds=1), TRAIN_END + timedelta(hours=3))  # the windows live scoring wrote (after the training end)
    runner.backfill(TRAIN_END + timedelta(hours=1), TRAIN_END + timedelta(hours=2))
    after = episodes(engine, tables)
    pd.testing.assert_frame_equal(after[["id", *EPISODE_FIELDS]], first[["id", *EPISODE_FIELDS]])
    assert after["acknowledged_by"].iloc[0] == "ana" and after["state"].iloc[0] == "acknowledged"

    # The same rows scored in one pass on a fresh database give the same episodes.
    settings2, engine2, tables2 = on_database(kind, "one_pass")
    append(engine2, tables2, t[t["timestamp"] <= TRAIN_END + timedelta(hours=3)])
    Runner(settings2, engine2, bundle).run_once()
    pd.testing.assert_frame_equal(episodes(engine2, tables2)[EPISODE_FIELDS], first[EPISODE_FIELDS], check_exact=False, rtol=SCORE_RTOL)


@pytest.mark.parametrize("kind", KINDS)
def test_maintenance_window_suppresses_episodes_only_when_rescored(fleet, kind, on_database, tmp_path, capsys):
    bundle = touchy(fleet.bundle)
    settings, engine, tables = on_database(kind)
    t = fleet.telemetry
    append(engine, tables, t[t["timestamp"] <= TRAIN_END + timedelta(hours=2)])
    Runner(settings, engine, bundle).run_once()
    before = episodes(engine, tables)
    assert (before["compressor_id"] == "C01").any()
    base = ["--db-url", settings.db_url, "--model-dir", str(settings.model_dir), "--config", str(tmp_path / "db.toml")]
    start, end = TRAIN_END.isoformat(), (TRAIN_END + timedelta(hours=2)).isoformat()
    assert main([*base, "maintenance", "add", "--compressor", "C01", "--start", start, "--end", end, "--reason", "seal replacement"]) == 0
    window_id = int(capsys.readouterr().out.strip())
    # Added after the fact: a live run with nothing new rewrites nothing.
    Runner(settings, engine, bundle).run_once()
    pd.testing.assert_frame_equal(episodes(engine, tables), before)
    # A backfill rescoring the range: C01's windows are stored, flagged, and open no episode; the summary counts them.
    Runner(settings, engine, bundle).backfill(TRAIN_END + timedelta(seconds=1), TRAIN_END + timedelta(hours=2), ["C01"])
    now = episodes(engine, tables)
    assert not (now["compressor_id"] == "C01").any()
    pd.testing.assert_frame_equal(now.reset_index(drop=True), before[before["compressor_id"] != "C01"].reset_index(drop=True))
    d, s = tables.detailed, tables.summary
    with engine.connect() as conn:
        flagged = conn.execute(sa.select(sa.func.count()).where(d.c.compressor_id == "C01", d.c.maintenance.is_(True))).scalar_one()
        total = conn.execute(sa.select(sa.func.count()).where(d.c.compressor_id == "C01")).scalar_one()
        counted = conn.execute(sa.select(s.c.maintenance_windows).where(s.c.compressor_id == "C01", s.c.mode == "backfill")).scalar_one()
        opened = conn.execute(sa.select(sa.func.count()).where(d.c.compressor_id == "C01", d.c.triggered.is_(True))).scalar_one()
    assert flagged == total == counted > 0 and opened == 0
    assert main([*base, "maintenance", "list"]) == 0
    assert "seal replacement" in capsys.readouterr().out
    assert main([*base, "maintenance", "remove", str(window_id)]) == 0
    assert main([*base, "maintenance", "remove", str(window_id)]) == 1
    assert capsys.readouterr().err.strip() == f"error: no maintenance window with id {window_id}"
    Runner(settings, engine, bundle).backfill(TRAIN_END + timedelta(seconds=1), TRAIN_END + timedelta(hours=2), ["C01"])
    pd.testing.assert_frame_equal(episodes(engine, tables)[EPISODE_FIELDS], before[EPISODE_FIELDS])


def test_stopped_compressor_opens_no_episode_during_a_start_up(fleet, tmp_path):
    """C01 of the small fleet stops and starts again around 02:20 (a simulator start-up ramp): flow below 30,000 Nm3/h."""
    bundle = touchy(fleet.bundle, threshold=-np.inf)  # every window anomalous: only suppression can keep one quiet
    t = fleet.telemetry
    ramp = t[(t["compressor_id"] == "C01") & (t["flow"] < 30_000)]
    assert len(ramp) > 10, "the simulated start-up is gone: pick another seed"
    start, end = START + timedelta(hours=1), START + timedelta(hours=4)
    for rule, expect_stopped in (("", False), ("[alerts]\nstopped_when = { flow = 30000.0 }\n", True)):
        settings, engine, tables = setup_db(fleet, tmp_path, f"mode{expect_stopped}", rule)
        append(engine, tables, t[t["timestamp"] <= end])
        Runner(settings, engine, bundle).backfill(start, end, ["C01"])
        d = tables.detailed
        with engine.connect() as conn:
            frame = pd.read_sql(sa.select(d.c.window_end, d.c.operating_mode, d.c.triggered, d.c.in_alert, d.c.is_anomaly).where(d.c.compressor_id == "C01").order_by(d.c.window_end), conn)
            stopped = conn.execute(sa.select(tables.summary.c.stopped_windows).where(tables.summary.c.compressor_id == "C01")).scalar_one()
        idle = frame["operating_mode"] != "running"
        assert bool(idle.any()) is expect_stopped and stopped == int(idle.sum())
        assert frame["is_anomaly"].astype(bool).all()  # the flag stays the score's
        if expect_stopped:
            assert set(frame.loc[idle, "operating_mode"]) == {"stopped", "starting"}
            last_stopped_row = ramp.loc[(ramp["timestamp"] >= start) & (ramp["timestamp"] <= end), "timestamp"].max()
            assert frame.loc[frame["window_end"] == last_stopped_row, "operating_mode"].item() == "stopped"
            assert not frame.loc[idle, "triggered"].astype(bool).any()
            # The episode open before the stop ends during it; a new one opens once running again.
            assert len(episodes(engine, tables)) == 2
        else:
            assert len(episodes(engine, tables)) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_alerts_list_ack_close_commands(fleet, kind, on_database, capsys):
    bundle = touchy(fleet.bundle)
    settings, engine, tables = on_database(kind)
    t = fleet.telemetry
    append(engine, tables, t[t["timestamp"] <= TRAIN_END + timedelta(hours=2)])
    Runner(settings, engine, bundle).run_once()
    base = ["--db-url", settings.db_url, "--model-dir", str(settings.model_dir)]
    assert main([*base, "alerts", "list", "--json", "--compressor", "C02"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed and {r["compressor_id"] for r in listed} == {"C02"} and {r["state"] for r in listed} == {"open"}
    target = listed[0]["id"]
    assert main([*base, "alerts", "ack", str(target), "--by", "ana", "--note", "checking seal gas"]) == 0
    assert capsys.readouterr().out.strip() == f"episode {target} acknowledged"
    assert main([*base, "alerts", "list", "--state", "acknowledged"]) == 0
    out = capsys.readouterr().out
    assert "ana" in out and out.count("\n") == 3  # header, rule, one row
    assert main([*base, "alerts", "close", str(target), "--note", "filter changed"]) == 0
    assert main([*base, "alerts", "close", str(target)]) == 1
    assert capsys.readouterr().err.strip().endswith(f"error: alert episode {target} is already closed")
    assert main([*base, "alerts", "ack", "999999", "--by", "ana"]) == 1
    assert capsys.readouterr().err.strip() == "error: no alert episode with id 999999"
    with engine.connect() as conn:
        row = conn.execute(sa.select(tables.alerts.episodes).where(tables.alerts.episodes.c.id == target)).mappings().one()
    assert (row["state"], row["acknowledged_by"], row["note"]) == ("closed", "ana", "filter changed")
    assert row["acknowledged_at"] is not None and row["closed_at"] is not None
    with pytest.raises(SystemExit):
        main([*base, "alerts", "ack", str(target)])  # --by is required
