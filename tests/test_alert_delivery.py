"""End to end with the real Debian binaries on 127.0.0.1: `run --once` pushes its metrics to a
Pushgateway, Prometheus scrapes it and evaluates deploy/prometheus/rules.yml, and Alertmanager
delivers the firing alert to a webhook receiver in this test (1 s scrape, evaluation and grouping).
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_tools import require
from ports import free_port
from test_metrics_endpoint import copy_fleet
from test_run_metrics import cli

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 90


class Webhook:
    """An Alertmanager webhook receiver: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def firing(self, alertname: str) -> list[dict]:
        return [a for b in self.bodies for a in b["alerts"] if a["labels"]["alertname"] == alertname and a["status"] == "firing"]


def wait_for(what: str, probe, logs: Path, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            found = probe()
            if found:
                return found
        time.sleep(0.25)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(logs.glob("*.log")))
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


@pytest.fixture
def monitoring(tmp_path):
    """Pushgateway, Alertmanager (to the webhook) and Prometheus (the project's rules), all on 127.0.0.1."""
    bins = require("prometheus", "prometheus-pushgateway", "prometheus-alertmanager")
    webhook = Webhook()
    ports = {name: free_port() for name in ("pushgateway", "alertmanager", "prometheus")}
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "test", "group_by": ["alertname", "instance"], "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "test", "webhook_configs": [{"url": webhook.url, "send_resolved": True}]}],
    }))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy" / "prometheus" / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]},
        "scrape_configs": [{"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [f"127.0.0.1:{ports['pushgateway']}"]}]}],
    }))
    commands = {
        "pushgateway": [bins["prometheus-pushgateway"], f"--web.listen-address=127.0.0.1:{ports['pushgateway']}"],
        "alertmanager": [
            bins["prometheus-alertmanager"], f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{ports['alertmanager']}", "--cluster.listen-address=",
        ],
        "prometheus": [
            bins["prometheus"], f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
        ],
    }
    procs = []
    try:
        for name, command in commands.items():
            with (tmp_path / f"{name}.log").open("wb") as log_file:
                procs.append(subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp_path))
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for name, url in urls.items():
            wait_for(f"{name} to be ready", lambda url=url: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, tmp_path)
        yield {**urls, "webhook": webhook, "logs": tmp_path}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        webhook.server.shutdown()


def query(prometheus: str, expr: str) -> list[dict]:
    reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    return reply["data"]["result"] if reply["status"] == "success" else []


def test_a_failing_cron_run_reaches_a_webhook(trained_fleet, tmp_path, monitoring):
    settings = copy_fleet(trained_fleet, tmp_path)
    prometheus, webhook, logs = monitoring["prometheus"], monitoring["webhook"], monitoring["logs"]

    done = cli(settings, "run", "--once", "--pushgateway", monitoring["pushgateway"])
    assert done.returncode == 0, done.stderr[-2000:]
    scored = wait_for("the pushed run to be scraped", lambda: query(prometheus, "compressor_ad_windows_scored_total"), logs)
    assert {s["metric"]["compressor_id"] for s in scored} == set(trained_fleet["bundle"].compressors)
    assert {s["metric"]["job"] for s in scored} == {"compressor_ad"}  # honor_labels: the push's own job
    last_success = float(query(prometheus, "compressor_ad_last_success_timestamp_seconds")[0]["value"][1])

    done = cli(settings.replace(model_dir=tmp_path / "no-models"), "run", "--once", "--pushgateway", monitoring["pushgateway"])
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("error: no model promoted")
    started = time.monotonic()
    alerts = wait_for("CompressorAdRunFailing at the webhook", lambda: webhook.firing("CompressorAdRunFailing"), logs)
    delivered_s = time.monotonic() - started

    alert = alerts[0]
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["job"] == "compressor_ad"
    assert alert["annotations"]["summary"] == f"compressor-ad: the last scoring run on {alert['labels']['instance']} failed"
    # The failed push left the last success alone: no "no successful run" from a failed cron run.
    assert float(query(prometheus, "compressor_ad_last_success_timestamp_seconds")[0]["value"][1]) == last_success
    failed = lambda: [s for s in query(prometheus, "compressor_ad_runs_failed_total") if s["value"][1] == "1"]  # noqa: E731
    assert wait_for("the failed run counted in Prometheus", failed, logs)  # the next scrape may not have happened yet
    print(f"failed run pushed -> alert at the webhook in {delivered_s:.1f} s")
