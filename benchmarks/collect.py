"""Sustained OPC UA collection: `python benchmarks/collect.py [--compressors 50] [--seconds 25] [--db-url URL]`.

Starts `opcua-serve-sim` (50 compressors x 16 signals, 1 s sampling, Basic256Sha256 +
SignAndEncrypt, user token, certificates made for the run) and `collect` on 127.0.0.1 for
SECONDS of wall time, stops the collector with SIGTERM and reports rows/s and values/s written,
missed sampling steps (collector's count and grid steps absent from the table), duplicate rows,
read latency p50/p99 (one Read of every node), and the collector's peak RSS. Database: a new
SQLite file in a temporary folder unless --db-url names a server (a scratch database on it).
Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from core.certificates import create_certificate  # noqa: E402
from db.scratch import scratch_database  # noqa: E402

SUMMARY = re.compile(r"collect: (\d+) polls, (\d+) missed steps, (\d+) rows sampled, .*?(\d+) values missing, .*?(\d+) rows written, (\d+) already stored, "
                     r"spool (\d+) rows left .*read p50 ([\d.]+) ms p99 ([\d.]+) ms")


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a running process (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{text!r} not seen in {log}:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compressors", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--db-url", help="database server URL (a scratch database is made on it); default a temporary SQLite file")
    parser.add_argument("--port", type=int, default=48485)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if args.db_url:
            with scratch_database(args.db_url, "bench") as url:
                result = run(d, url, args)
        else:
            result = run(d, f"sqlite:///{d / 'bench.sqlite'}", args)
    print(json.dumps(result))


def run(d: Path, url: str, args) -> dict:
    create_certificate(d / "server.der", d / "server.pem", "urn:compressor-ad:simulator", "server", ("127.0.0.1",))
    create_certificate(d / "client.der", d / "client.pem", "urn:compressor-ad:collector", "client", ("127.0.0.1",))
    (d / "password").write_text("bench-password\n")
    ids = [f"C{i + 1:02d}" for i in range(args.compressors)]
    (d / "c.toml").write_text(
        "[data]\nsampling_interval_s = 1.0\n[opcua]\n"
        f'endpoint = "opc.tcp://127.0.0.1:{args.port}/"\ncertificate = "{d / "client.der"}"\nprivate_key = "{d / "client.pem"}"\n'
        f'server_certificates = ["{d / "server.der"}"]\nusername = "bench"\npassword_file = "{d / "password"}"\n'
        f'spool_path = "{d / "spool.sqlite"}"\nnode_template = "ns=2;s={{compressor}}.{{signal}}"\ncompressors = {json.dumps(ids)}\n'
    )
    base = [sys.executable, str(ROOT / "run_scheduler.py"), "--config", str(d / "c.toml"), "--db-url", url]
    server_log, collect_log = d / "server.log", d / "collect.log"
    with server_log.open("w") as out:
        server = subprocess.Popen([*base, "opcua-serve-sim", "--port", str(args.port), "--compressors", str(args.compressors), "--certificate", str(d / "server.der"),
                                   "--private-key", str(d / "server.pem"), "--trust", str(d / "client.der"), "--username", "bench", "--password-file", str(d / "password")],
                                  cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(server_log, "serving", server)
        with collect_log.open("w") as out:
            collector = subprocess.Popen([*base, "collect"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_for(collect_log, "connected to opc.tcp", collector)
        started = time.monotonic()
        time.sleep(args.seconds)
        rss = peak_rss_mib(collector.pid)
        collector.send_signal(signal.SIGTERM)
        elapsed = time.monotonic() - started
        code = collector.wait(timeout=120)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    text = collect_log.read_text()
    m = SUMMARY.search(text)
    if code != 0 or not m:
        raise SystemExit(f"collector exited {code}:\n{text[-2000:]}")
    polls, missed, sampled, missing, written, already, left, p50, p99 = m.groups()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows, distinct = conn.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT compressor_id || '@' || CAST(timestamp AS TEXT)) FROM compressor_telemetry")
                                      if url.startswith("sqlite") else
                                      sa.text("SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT DISTINCT compressor_id, timestamp FROM compressor_telemetry) d) FROM compressor_telemetry")).one()
        spans = conn.execute(sa.text("SELECT compressor_id, MIN(timestamp), MAX(timestamp), COUNT(*) FROM compressor_telemetry GROUP BY compressor_id")).all()
    engine.dispose()
    absent = sum(int(round((_t(hi) - _t(lo)))) + 1 - n for _, lo, hi, n in spans)
    result = {
        "compressors": args.compressors, "signals": 16, "sampling_interval_s": 1.0, "seconds": round(elapsed, 1), "polls": int(polls),
        "rows_written": int(written), "rows_per_s": round(int(written) / elapsed, 1), "values_per_s": round(int(written) * 16 / elapsed, 1),
        "missed_steps": int(missed), "grid_steps_absent": absent, "duplicates": int(rows) - int(distinct), "already_stored": int(already),
        "values_missing": int(missing), "spool_left": int(left), "read_p50_ms": float(p50), "read_p99_ms": float(p99), "peak_rss_mib": round(rss, 1),
    }
    print(f"{args.compressors} compressors x 16 signals at 1 s for {elapsed:.1f} s (SignAndEncrypt, {url.split(':')[0]}): "
          f"{result['rows_per_s']} rows/s, {result['values_per_s']} values/s written; missed steps {missed}, grid steps absent {absent}, "
          f"duplicates {result['duplicates']}; read p50 {p50} ms, p99 {p99} ms; collector peak RSS {result['peak_rss_mib']} MiB")
    return result


def _t(value) -> float:
    from datetime import datetime

    return (value if isinstance(value, datetime) else datetime.fromisoformat(str(value))).timestamp()


if __name__ == "__main__":
    main()
