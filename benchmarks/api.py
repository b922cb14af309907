#!/usr/bin/env python3
"""Scoring API throughput and latency over loopback: `serve` in a subprocess, httpx as the client.

    python benchmarks/api.py                          # trains a small model on a simulated fleet first
    python benchmarks/api.py --model-dir var/models   # an existing promoted model (and its features)

Two request shapes: 1 window and 128 windows per request, each sent sequentially on one
keep-alive connection, bounded in count (--requests) and time (--max-seconds). Prints one line
per shape and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.settings import load_settings, with_section  # noqa: E402
from models.artifacts import read_metadata  # noqa: E402

START = datetime(2026, 1, 1)


def small_model(directory: Path):
    """Simulate 3 compressors for 1 day and train a model on the first 18 hours (a few epochs)."""
    from db.engine import make_engine
    from db.schema import build_tables, create_all
    from db.source import write_telemetry
    from pipeline.publish import train_and_publish
    from simulation.fleet import simulate_fleet

    settings = load_settings(None, env={}, db_url=f"sqlite:///{directory / 'bench.sqlite'}", model_dir=str(directory / "models"))
    settings = with_section(settings, "training", epochs=2, patience=1, window_stride=4)
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    create_all(engine, tables)
    write_telemetry(engine, tables, simulate_fleet(3, 1.0, start=START, seed=5).telemetry)
    end = START + timedelta(hours=18)
    train_and_publish(engine, tables, settings, START, end)
    engine.dispose()
    return settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(settings, key: str, port: int, max_windows: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_AD_")}
    env.update(COMPRESSOR_AD_API_KEY=key, TF_CPP_MIN_LOG_LEVEL="2")
    command = [
        sys.executable, str(ROOT / "run_scheduler.py"), "--log-level", "WARNING", "--db-url", settings.db_url,
        "--model-dir", str(settings.model_dir), "serve", "--port", str(port), "--max-windows", str(max_windows),
    ]
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become healthy within 300 s")


def payload(features: list[str], window: int, n_windows: int, cid: str, seed: int) -> bytes:
    """A request body of n_windows windows of plausible values (JSON, encoded once)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(1.0, 50.0, size=len(features))
    values = level[None, None, :] * (1 + 0.01 * rng.standard_normal((n_windows, window, len(features))))
    windows = [{name: w[:, i].round(5).tolist() for i, name in enumerate(features)} for w in values]
    return json.dumps({"compressor_id": cid, "windows": windows}).encode()


def measure(client: httpx.Client, body: bytes, requests: int, max_seconds: float, warmup: int = 5) -> dict:
    """Sequential POST /score; latency per request (send to full response)."""
    for _ in range(warmup):
        client.post("/score", content=body).raise_for_status()
    latencies = []
    started = time.perf_counter()
    while len(latencies) < requests and time.perf_counter() - started < max_seconds:
        t0 = time.perf_counter()
        client.post("/score", content=body).raise_for_status()
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "body_bytes": len(body),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", help="database for /health (with --model-dir)")
    parser.add_argument("--model-dir", help="an existing model directory with a promoted version")
    parser.add_argument("--requests", type=int, default=200, help="requests per shape (at most)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time per shape (at most)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        if args.model_dir:
            settings = load_settings(None, db_url=args.db_url or f"sqlite:///{Path(tmp) / 'health.sqlite'}", model_dir=args.model_dir)
        else:
            print("training a small model on a simulated fleet ...", flush=True)
            settings = small_model(Path(tmp))
        key, port = secrets.token_urlsafe(32), free_port()
        server = start_server(settings, key, port, max_windows=128)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key, "Content-Type": "application/json"}, timeout=60) as client:
                health = client.get("/health").json()
                meta = read_metadata(settings.model_dir, health["model_version"])
                cid = meta["compressors"][0]
                results = {}
                for n_windows in (1, 128):
                    body = payload(meta["features"], meta["window"], n_windows, cid, seed=n_windows)
                    results[f"{n_windows}_window"] = stats = measure(client, body, args.requests, args.max_seconds)
                    stats["windows_per_s"] = round(stats["requests_per_s"] * n_windows, 1)
                    print(
                        f"{n_windows:>4} window(s)/request: {stats['requests']} requests, {stats['requests_per_s']} req/s "
                        f"({stats['windows_per_s']} windows/s), p50 {stats['p50_ms']} ms, p99 {stats['p99_ms']} ms, "
                        f"body {stats['body_bytes']} bytes",
                        flush=True,
                    )
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(60)
    print(json.dumps({
        "benchmark": "api", "model_version": health["model_version"], "detector": health["detector"],
        "cpu_count": os.cpu_count(), "server_exit_code": code, **results,
    }))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
