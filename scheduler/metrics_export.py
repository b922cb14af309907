"""Run metrics of `run --once` (cron, systemd timer, Task Scheduler): pushed to a Prometheus
Pushgateway, or written to a node-exporter textfile, after the run, whatever its outcome.

A failed run keeps the last success time that was already known: the push (POST) leaves out that
metric, so the Pushgateway keeps the value of the last successful run; the textfile carries it
over from the file it replaces. So `time() - compressor_ad_last_success_timestamp_seconds` in
deploy/prometheus/rules.yml counts from the last success under cron as under the daemon.
"""
from __future__ import annotations

import logging
import socket
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import pushadd_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from core.errors import PipelineError
from core.settings import MetricsSettings
from scheduler.metrics import DaemonMetrics

log = logging.getLogger(__name__)

LAST_SUCCESS = "compressor_ad_last_success_timestamp_seconds"
PUSH_TIMEOUT_S = 10.0


class _Without:
    """A registry view without some metric families (what a failed run does not know)."""

    def __init__(self, registry, names: set[str]) -> None:
        self.registry, self.names = registry, names

    def collect(self):
        return [family for family in self.registry.collect() if family.name not in self.names]


def _where(url: str) -> str:
    """scheme://host:port of a URL, without user, password or path (for messages)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def previous_last_success(path: Path) -> float | None:
    """The last success time in an existing textfile, if it has one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return sample.value
    except ValueError:
        log.warning("metrics: %s is not in the Prometheus text format; the last success time starts again", path)
    return None


def push(metrics: DaemonMetrics, config: MetricsSettings, succeeded: bool) -> None:
    """POST the run's metrics to the Pushgateway group {job, instance = this host}."""
    registry = metrics.registry if succeeded else _Without(metrics.registry, {LAST_SUCCESS})
    try:
        pushadd_to_gateway(config.pushgateway, job=config.job, registry=registry, grouping_key={"instance": socket.gethostname()}, timeout=PUSH_TIMEOUT_S)
    except OSError as exc:  # URLError, HTTPError, timeouts
        raise PipelineError(f"run metrics not delivered to the Pushgateway at {_where(config.pushgateway)}: {getattr(exc, 'reason', exc)}") from exc
    log.info("metrics: pushed the run's metrics to %s (job %s)", _where(config.pushgateway), config.job)


def write_textfile(metrics: DaemonMetrics, config: MetricsSettings, succeeded: bool) -> None:
    """Replace the textfile atomically (a temporary file in its directory, then rename)."""
    path = Path(config.textfile)
    if not succeeded:
        known = previous_last_success(path)
        if known is not None:
            metrics.last_success.set(known)
    try:
        write_to_textfile(str(path), metrics.registry)
    except OSError as exc:
        raise PipelineError(f"run metrics not written to {path}: {exc.strerror or exc}") from exc
    log.info("metrics: wrote the run's metrics to %s", path)


def export_run(metrics: DaemonMetrics, config: MetricsSettings, succeeded: bool) -> None:
    """Send the run's metrics wherever [metrics] says (both places if both are set); the first
    failure is raised after both were tried."""
    errors = []
    for wanted, send in ((config.pushgateway, push), (config.textfile, write_textfile)):
        if wanted:
            try:
                send(metrics, config, succeeded)
            except PipelineError as exc:
                errors.append(exc)
    if errors:
        raise errors[0]
