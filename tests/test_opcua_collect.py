"""The OPC UA collector against the project's own asyncua server on 127.0.0.1 (no protocol mocks).

The simulator server (`opcua-serve-sim`) runs its clock at SPEED x wall time, so a 30 s sampling
step lasts STEP_S of wall time; the collector polls every POLL_S, several times per step, so
it sees every step. Certificates are made per test session; everything runs as real processes.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from core.certificates import create_certificate
from core.settings import DEFAULT_FEATURES, load_settings
from db.engine import make_engine
from db.schema import build_tables
from tests.db_servers import database, require_server
from tests.scheduler_harness import ROOT, scheduler_env
from tests.ports import free_port

STEP_S = 0.4
POLL_S = 0.1
SPEED = 30.0 / STEP_S
COMPRESSORS = ("C01", "C02")
SUMMARY = re.compile(r"collect: (\d+) polls, (\d+) missed steps, (\d+) rows sampled, .* (\d+) rows written, (\d+) already stored, spool (\d+) rows left")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Server and client key pairs, a second client pair the server does not trust, a password file."""
    d = tmp_path_factory.mktemp("pki")
    create_certificate(d / "server.der", d / "server.pem", "urn:compressor-ad:simulator", "server", ("127.0.0.1",))
    create_certificate(d / "client.der", d / "client.pem", "urn:compressor-ad:collector", "client", ("127.0.0.1",))
    create_certificate(d / "stranger.der", d / "stranger.pem", "urn:compressor-ad:collector", "client", ("127.0.0.1",))
    create_certificate(d / "impostor.der", d / "impostor.pem", "urn:compressor-ad:simulator", "server", ("127.0.0.1",))
    (d / "password").write_text("s3cret-plant\n")
    (d / "wrong").write_text("guess\n")
    return d


def write_config(path: Path, pki: Path, port: int, **opcua) -> Path:
    values = {
        "endpoint": f"opc.tcp://127.0.0.1:{port}/",
        "certificate": str(pki / "client.der"),
        "private_key": str(pki / "client.pem"),
        "server_certificates": [str(pki / "server.der")],
        "username": "operator",
        "password_file": str(pki / "password"),
        "sampling_interval_s": POLL_S,
        "spool_path": str(path.parent / "spool.sqlite"),
        "node_template": "ns=2;s={compressor}.{signal}",
        "compressors": list(COMPRESSORS),
        **opcua,
    }
    # The simulated clock runs ahead of real time: the scheduler must not hold those rows back as
    # "from the future" (a day of tolerance instead of 300 s).
    lines = ["[data]", "window = 10", "missing_value_rule = \"impute\"", "future_tolerance_s = 86400.0", "[training]", "epochs = 1", "batch_size = 128", "patience = 1", "window_stride = 3", "[opcua]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Procs:
    """Subprocesses of run_scheduler.py with their logs; all are stopped at the end of the test."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.running = folder, []

    def start(self, name: str, *args: str, audit: Path | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.folder / f"{name}-{time.monotonic_ns()}.log"
        prefix = [sys.executable, str(ROOT / "tests" / "socket_audit.py"), str(audit)] if audit else [sys.executable, str(ROOT / "run_scheduler.py")]
        with log.open("w") as handle:
            proc = subprocess.Popen([*prefix, *args], cwd=ROOT, env=scheduler_env(), stdout=handle, stderr=subprocess.STDOUT)
        self.running.append(proc)
        return proc, log

    def run(self, *args: str, audit: Path | None = None, timeout: float = 240) -> tuple[int, str]:
        proc, log = self.start("run", *args, audit=audit)
        return proc.wait(timeout=timeout), log.read_text()

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.stop_all()


def wait_for(log: Path, pattern: str, proc: subprocess.Popen | None = None, timeout: float = 60, count: int = 1) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if len(re.findall(pattern, text)) >= count:
            return text
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} did not appear {count} time(s) in {log}:\n{log.read_text()[-3000:]}")


def start_server(procs: Procs, config: Path, pki: Path, port: int, start: datetime, *extra: str):
    proc, log = procs.start(
        "server", "--config", str(config), "opcua-serve-sim", "--port", str(port), "--compressors", str(len(COMPRESSORS)),
        "--start", start.isoformat(), "--speed", str(SPEED), "--certificate", str(pki / "server.der"), "--private-key", str(pki / "server.pem"),
        "--trust", str(pki / "client.der"), "--username", "operator", "--password-file", str(pki / "password"), *extra,
    )
    wait_for(log, "serving 2 compressors", proc)
    return proc, log


def stop(proc: subprocess.Popen, timeout: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def summary(text: str) -> dict[str, int]:
    m = SUMMARY.search(text)
    assert m, text[-2000:]
    keys = ("polls", "missed", "sampled", "written", "already", "spool_left")
    return dict(zip(keys, map(int, m.groups())))


def source_rows(url: str, config: Path) -> pd.DataFrame:
    settings = load_settings(config, env={}, db_url=url)
    engine = make_engine(url)
    with engine.connect() as conn:
        frame = pd.read_sql(sa.select(build_tables(settings).source), conn)
    engine.dispose()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame.sort_values(["compressor_id", "timestamp"]).reset_index(drop=True)


def assert_on_grid_once_each(frame: pd.DataFrame, start: datetime, contiguous: bool = True) -> None:
    """Every row sits on a 30 s step of the simulated clock, exactly once; optionally without missing steps."""
    assert not frame.duplicated(["compressor_id", "timestamp"]).any(), "duplicate rows"
    offsets = (frame["timestamp"] - pd.Timestamp(start)).dt.total_seconds()
    assert (offsets % 30 == 0).all(), "a timestamp is off the sampling grid: not the source timestamp"
    if contiguous:
        for cid, rows in frame.groupby("compressor_id"):
            steps = np.diff(rows["timestamp"].to_numpy()).astype("timedelta64[s]").astype(int)
            assert (steps == 30).all(), f"{cid}: steps missing: {sorted(set(steps))}"


def sim_start() -> datetime:
    return datetime.utcnow().replace(microsecond=0) - timedelta(seconds=1)


# ----------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, pki):
    """A tiny model (10-step windows, one epoch) of the two simulated compressors the server serves."""
    from db.schema import create_all
    from db.source import write_telemetry
    from pipeline.publish import publish, train_from_source
    from simulation.fleet import simulate_fleet

    folder = tmp_path_factory.mktemp("opcua-model")
    settings = load_settings(write_config(folder / "train.toml", pki, 1), env={}, db_url=f"sqlite:///{folder / 'train.sqlite'}", model_dir=str(folder / "models"))
    start = datetime(2026, 1, 1)
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    create_all(engine, tables)
    write_telemetry(engine, tables, simulate_fleet(len(COMPRESSORS), 0.25, start=start, seed=7).telemetry)
    bundle = train_from_source(engine, tables, settings, start, None)  # all 6 h; no training end, so live runs score from the start
    engine.dispose()
    publish(bundle, settings.model_dir)
    return settings.model_dir


@pytest.mark.slow
def test_values_arrive_with_source_timestamps_are_scored_and_only_configured_addresses_are_contacted(tmp_path, procs, pki, model_dir):
    """SignAndEncrypt + user token; collector and scheduler run under a socket audit hook on MariaDB."""
    from simulation.fleet import simulate_fleet

    port = free_port()
    config = write_config(tmp_path / "c.toml", pki, port)
    start = sim_start()
    server, _ = start_server(procs, config, pki, port, start, "--bad-fraction", "0.02")
    audit = tmp_path / "sockets.jsonl"
    with database("mariadb", tmp_path) as url:
        collector, log = procs.start("collect", "--config", str(config), "--db-url", url, "collect", audit=audit)
        wait_for(log, r"connected to opc\.tcp", collector)
        time.sleep(18 * STEP_S)
        assert stop(collector) == 0
        text = log.read_text()
        report = summary(text)
        code, run_log = procs.run("--config", str(config), "--db-url", url, "--model-dir", str(model_dir), "run", "--once", audit=audit)
        assert code == 0, run_log[-3000:]
        rows = source_rows(url, config)
        engine = make_engine(url)
        with engine.connect() as conn:
            scored = dict(conn.execute(sa.text("SELECT compressor_id, COUNT(*) FROM lstm_predictions_detailed GROUP BY compressor_id")).all())
        engine.dispose()
    assert stop(server) == 0
    assert set(rows["compressor_id"]) == set(COMPRESSORS)
    assert report["sampled"] == report["written"] == len(rows) >= 2 * 12 and report["spool_left"] == 0
    assert_on_grid_once_each(rows, start)
    # The values are the simulator's values of the step named by the source timestamp.
    fleet = simulate_fleet(len(COMPRESSORS), 1.0, start=start, seed=7).telemetry.set_index(["compressor_id", "timestamp"])
    expected = fleet.loc[list(zip(rows["compressor_id"], rows["timestamp"])), list(DEFAULT_FEATURES)].to_numpy()
    got = rows[list(DEFAULT_FEATURES)].to_numpy(dtype=float)
    present = ~np.isnan(got)
    np.testing.assert_allclose(got[present], expected[present], rtol=1e-12)
    # Bad-quality values are missing in the table, and counted in the log.
    missing = int((~present).sum())
    assert missing > 0 and "BadSensorFailure x" in text
    assert sum(int(n) for n in re.findall(r"(\d+) value\(s\) not Good", text)) == missing
    assert all(n > 0 for n in scored.values()) and set(scored) == set(COMPRESSORS)
    # Sockets: the OPC UA endpoint and the database server, nothing else.
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    connects = {tuple(e["address"]) for e in events if e["event"] == "connect" and isinstance(e["address"], list)}
    assert connects == {("127.0.0.1", port), ("127.0.0.1", 3306)}, connects
    lookups = {e["address"][0] for e in events if e["event"] == "getaddrinfo"}
    assert lookups <= {"127.0.0.1"}, lookups


@pytest.mark.slow
def test_untrusted_certificate_wrong_password_and_insecure_policy_are_refused_in_one_line(tmp_path, procs, pki):
    port = free_port()
    good = write_config(tmp_path / "good.toml", pki, port)
    server, _ = start_server(procs, good, pki, port, sim_start())
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cases = {
        "stranger": ({"certificate": str(pki / "stranger.der"), "private_key": str(pki / "stranger.pem")}, "rejected the client certificate"),
        "password": ({"password_file": str(pki / "wrong")}, "refused user 'operator'"),
        "impostor": ({"server_certificates": [str(pki / "impostor.der")]}, "that is not in [opcua] server_certificates"),
        "insecure": ({"security_policy": "None", "security_mode": "None"}, "set allow_insecure = true"),
    }
    for name, (change, reason) in cases.items():
        config = write_config(tmp_path / f"{name}.toml", pki, port, **change)
        code, out = procs.run("--config", str(config), "--db-url", url, "collect", "--once", timeout=60)
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert code == 1 and len(errors) == 1 and reason in errors[0], (name, out[-2000:])
    assert not (tmp_path / "db.sqlite").exists() or source_rows(url, good).empty
    code, out = procs.run("--config", str(good), "--db-url", url, "collect", "--once", timeout=60)
    assert code == 0 and len(source_rows(url, good)) == len(COMPRESSORS), out[-2000:]
    assert stop(server) == 0


@pytest.mark.slow
def test_server_restart_reconnects_reports_the_gap_and_duplicates_nothing(tmp_path, procs, pki):
    port = free_port()
    config = write_config(tmp_path / "c.toml", pki, port, reconnect_max_delay_s=2.0)
    start = sim_start()
    server, _ = start_server(procs, config, pki, port, start)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    collector, log = procs.start("collect", "--config", str(config), "--db-url", url, "collect")
    wait_for(log, r"connected to opc\.tcp", collector)
    time.sleep(6 * STEP_S)
    assert stop(server) == 0
    wait_for(log, "unreachable", collector)
    time.sleep(4 * STEP_S)
    server, _ = start_server(procs, config, pki, port, start)
    wait_for(log, "reconnected to", collector)
    time.sleep(6 * STEP_S)
    assert stop(collector) == 0
    text = log.read_text()
    assert stop(server) == 0
    rows = source_rows(url, config)
    report = summary(text)
    assert report["sampled"] == report["written"] == len(rows) and report["spool_left"] == 0
    assert_on_grid_once_each(rows, start, contiguous=False)
    for cid, frame in rows.groupby("compressor_id"):
        steps = np.diff(frame["timestamp"].to_numpy()).astype("timedelta64[s]").astype(int)
        assert (steps > 30).sum() == 1, f"{cid}: expected one gap, steps {steps}"
        assert f"gap: compressor {cid} has no samples between" in text


@pytest.mark.slow
def test_database_outage_spools_then_drains_in_order_and_sigterm_exits_zero(tmp_path, procs, pki):
    """PostgreSQL refuses connections for a while (ALLOW_CONNECTIONS false, sessions ended): nothing lost or doubled."""
    port = free_port()
    config = write_config(tmp_path / "c.toml", pki, port)
    start = sim_start()
    server, _ = start_server(procs, config, pki, port, start)
    admin = sa.create_engine(require_server("postgresql"), isolation_level="AUTOCOMMIT")
    with database("postgresql", tmp_path) as url:
        name = sa.engine.make_url(url).database
        quoted = admin.dialect.identifier_preparer.quote(name)

        def allow(on: bool) -> None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"ALTER DATABASE {quoted} WITH ALLOW_CONNECTIONS {'true' if on else 'false'}")
                if not on:
                    conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name})

        collector, log = procs.start("collect", "--config", str(config), "--db-url", url, "collect")
        wait_for(log, r"connected to opc\.tcp", collector)
        time.sleep(5 * STEP_S)
        allow(False)
        wait_for(log, "keeping samples in the spool", collector)
        time.sleep(6 * STEP_S)
        allow(True)
        wait_for(log, "database is back", collector, timeout=90)
        time.sleep(4 * STEP_S)
        assert stop(collector) == 0
        text = log.read_text()
        rows = source_rows(url, config)
        # SIGTERM while the database is away: the spool keeps the rows, the next start writes them.
        collector, log2 = procs.start("collect", "--config", str(config), "--db-url", url, "collect")
        wait_for(log2, r"connected to opc\.tcp", collector)
        allow(False)
        wait_for(log2, "keeping samples in the spool", collector)
        time.sleep(3 * STEP_S)
        assert stop(collector) == 0
        held = summary(log2.read_text())
        allow(True)
        code, out = procs.run("--config", str(config), "--db-url", url, "collect", "--once", timeout=60)
        after = source_rows(url, config)
    admin.dispose()
    assert stop(server) == 0
    report = summary(text)
    assert report["sampled"] == report["written"] == len(rows) and report["spool_left"] == 0
    assert_on_grid_once_each(rows, start)
    assert held["spool_left"] > 0 and f"spool {held['spool_left']} rows left" in log2.read_text()
    assert code == 0 and summary(out)["spool_left"] == 0, out[-2000:]
    assert_on_grid_once_each(after, start, contiguous=False)
    assert len(after) >= len(rows) + held["spool_left"]


# ----------------------------------------------------------------------------- settings and spool
def _opcua_settings(tmp_path: Path, text: str):
    path = tmp_path / "o.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, env={})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('[opcua]\nsecurity_policy = "Basic128Rsa15"', "Basic256Sha256 or stronger"),
        ('[opcua]\nsecurity_policy = "None"\nsecurity_mode = "None"', "set allow_insecure = true"),
        ('[opcua]\nsecurity_policy = "None"\nsecurity_mode = "SignAndEncrypt"\nallow_insecure = true', 'both be "None"'),
        ('[opcua]\nallow_insecure = "yes"', "allow_insecure must be true or false"),
        ('[opcua]\nendpoint = "http://plant:4840"', "opc.tcp://"),
        ('[opcua]\ncompressors = ["C01"]', "needs node_template"),
        ('[opcua]\nnode_template = "ns=2;s={unit}.{signal}"\ncompressors = ["C01"]', "only {compressor} and {signal}"),
        ('[opcua.nodes.C01]\nflow = "ns=2;i=1"', "lacks a NodeId for: filter_dp"),
        ('[opcua.nodes.C01]\nspeed = "ns=2;i=1"', "not in [data] features: speed"),
        ('[opcua.nodes.C01]\nflow = 3', "must be tables of signal"),
    ],
)
def test_opcua_settings_refuse_weak_security_and_incomplete_node_maps(tmp_path, text, reason):
    from core.errors import SettingsError

    with pytest.raises(SettingsError, match=re.escape(reason)):
        _opcua_settings(tmp_path, text)


def test_opcua_node_map_template_and_overrides_and_the_example_config_loads(tmp_path):
    from core.settings import opcua_node_map

    settings = _opcua_settings(tmp_path, '[opcua]\nnode_template = "ns=2;s={compressor}.{signal}"\ncompressors = ["C01"]\n[opcua.nodes.C01]\nflow = "ns=3;i=7"\n')
    mapping = opcua_node_map(settings)
    assert mapping["C01"]["flow"] == "ns=3;i=7" and mapping["C01"]["filter_dp"] == "ns=2;s=C01.filter_dp" and len(mapping["C01"]) == 16
    example = load_settings(ROOT / "config.example.toml", env={})
    assert example.opcua.security_mode == "SignAndEncrypt" and example.model_dir == ROOT / "var/models"  # relative to the file


def test_spool_keeps_order_bounds_its_size_and_stores_missing_as_null(tmp_path):
    from pipeline.spool import Spool

    spool = Spool(tmp_path / "s.sqlite", max_rows=3)
    t0 = datetime(2026, 1, 1)
    spool.append([("C01", t0 + timedelta(seconds=30 * i), {"flow": float(i), "vibration": float("nan")}) for i in range(5)])
    assert len(spool) == 3 and spool.dropped == 2
    seq, rows = spool.head(10)
    assert [r[2]["flow"] for r in rows] == [2.0, 3.0, 4.0] and all(r[2]["vibration"] is None for r in rows)
    spool.remove_through(seq)
    assert len(Spool(tmp_path / "s.sqlite", max_rows=3)) == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_writing_the_same_rows_again_writes_none(kind, tmp_path):
    from db.schema import create_all
    from db.source import write_new_telemetry
    from simulation.fleet import simulate_fleet

    with database(kind, tmp_path) as url:
        settings = load_settings(None, env={}, db_url=url)
        engine, tables = make_engine(url), build_tables(settings)
        create_all(engine, tables)
        frame = simulate_fleet(2, 0.01, seed=3).telemetry.drop(columns=["label"])
        with engine.begin() as conn:
            assert write_new_telemetry(conn, tables, settings, frame.iloc[:20]) == (20, 0)
        with engine.begin() as conn:
            assert write_new_telemetry(conn, tables, settings, frame) == (len(frame) - 20, 20)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM compressor_telemetry")).scalar() == len(frame)
        engine.dispose()


def test_systemd_collector_unit_runs_collect_with_the_config_file():
    import configparser
    import shlex

    from scheduler.cli import build_parser

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(ROOT / "deploy" / "systemd" / "compressor-ad-collect.service", encoding="utf-8")
    service = parser["Service"]
    assert service["User"] == "compressor-ad" and service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    argv = shlex.split(service["ExecStart"])
    args = build_parser().parse_args(argv[argv.index("run_scheduler.py") + 1 :])
    assert args.command == "collect" and args.config == "/etc/compressor-ad/config.toml" and not args.once
