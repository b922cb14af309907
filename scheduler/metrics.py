"""Prometheus metrics of the scheduler: served by the daemon (`run --interval M --metrics-port P`),
pushed or written to a textfile by `run --once` (scheduler/metrics_export.py).

`DaemonMetrics` is a RunObserver of an executor (local or Dask): it counts every batch and every
run; after each run the checkpoint lag and the open alert episode of every compressor are read
from the database. Each `DaemonMetrics` has its own registry, so several can live in one process (tests).
The alert rules in deploy/prometheus/rules.yml use only these names.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from core.clock import utcnow
from core.errors import PipelineError
from db.alerts import pending_counts
from db.results import read_checkpoints
from models.alarms import AlarmState
from pipeline.batch import BatchOutcome
from scheduler.executor import Executor, RunObserver, RunReport

log = logging.getLogger(__name__)

RUN_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class DaemonMetrics(RunObserver):
    """The daemon's metric families, registered in one CollectorRegistry, set from the runs it observes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs_started = Counter("compressor_ad_runs_started", "Scheduler runs started", registry=r)
        self.runs_succeeded = Counter("compressor_ad_runs_succeeded", "Runs in which every compressor succeeded", registry=r)
        self.runs_failed = Counter("compressor_ad_runs_failed", "Runs that failed or had a failed compressor", registry=r)
        self.run_duration = Histogram("compressor_ad_run_duration_seconds", "Duration of one run over the fleet", buckets=RUN_DURATION_BUCKETS, registry=r)
        self.last_success = Gauge("compressor_ad_last_success_timestamp_seconds", "Unix time of the last successful run", registry=r)
        self.last_run = Gauge("compressor_ad_last_run_timestamp_seconds", "Unix time the last run ended, whatever its outcome (0: none yet)", registry=r)
        self.last_run_success = Gauge("compressor_ad_last_run_success", "1 when the last run succeeded for every compressor, else 0", registry=r)
        self.run_interval = Gauge("compressor_ad_run_interval_seconds", "How often a run is started (--interval, or [metrics] run_interval_minutes)", registry=r)
        # Unsent rows of the notification outbox (alert_notifications), read with the checkpoints.
        self.notifications_pending = Gauge("compressor_ad_notifications_pending", "Notifications written but not yet delivered", registry=r)
        by_cid = ["compressor_id"]
        self.batches = Counter("compressor_ad_batches", "Batches by compressor and status", ["compressor_id", "status"], registry=r)
        self.rows_read = Counter("compressor_ad_rows_read", "Source rows read", by_cid, registry=r)
        self.windows_scored = Counter("compressor_ad_windows_scored", "Windows scored", by_cid, registry=r)
        self.anomaly_points = Counter("compressor_ad_anomaly_points", "Windows whose score exceeded the threshold", by_cid, registry=r)
        self.alerts = Counter("compressor_ad_alerts_triggered", "Alert episodes opened (the model's alarm rule held)", by_cid, registry=r)
        self.checkpoint_lag = Gauge(
            "compressor_ad_checkpoint_lag_seconds", "Latest source row minus the checkpoint (rows not yet scored)", by_cid, registry=r
        )
        self.checkpoint_age = Gauge("compressor_ad_checkpoint_age_seconds", "Now minus the checkpoint", by_cid, registry=r)
        self.alert_open = Gauge(
            "compressor_ad_alert_open", "1 while the compressor has an open alert episode (its live checkpoint's alarm state)", by_cid, registry=r
        )
        self.threshold_holds = Gauge(
            "compressor_ad_threshold_holds",
            "1 while the compressor's recent share of windows above its threshold is consistent with its calibration, 0 when far over it",
            by_cid, registry=r,
        )
        self.recent_above_threshold = Gauge(
            "compressor_ad_recent_above_threshold_ratio", "Share of the compressor's windows of the last threshold_check_hours above its threshold", by_cid, registry=r
        )
        self.calibrated_above_threshold = Gauge(
            "compressor_ad_calibrated_above_threshold_ratio", "Share of normal windows the compressor's threshold was calibrated to leave above it", by_cid, registry=r
        )
        self.model = Info("compressor_ad_model", "Model version in use", registry=r)

    def on_run_started(self, executor: Executor, mode: str) -> None:
        self.runs_started.inc()

    def on_batch(self, outcome: BatchOutcome) -> None:
        """Count one compressor's batch by status; a failed one adds no rows, windows or alerts."""
        cid = outcome.compressor_id
        self.batches.labels(cid, outcome.status).inc()
        if outcome.status == "failed":
            return
        self.rows_read.labels(cid).inc(outcome.rows_read)
        self.windows_scored.labels(cid).inc(outcome.windows_scored)
        self.anomaly_points.labels(cid).inc(outcome.anomaly_points)
        self.alerts.labels(cid).inc(outcome.triggered_events)

    def on_run(self, executor: Executor, report: RunReport) -> None:
        """The run's duration and outcome; the checkpoints are read first, so a scrape that sees the run sees them.
        Checkpoints that cannot be read (database gone, a value that is no timestamp) leave those gauges as they were."""
        self.run_duration.observe(report.duration_s)
        self.observe_model(executor.model_info())
        for health in report.thresholds:
            self.threshold_holds.labels(health.compressor_id).set(1 if health.holds else 0)
            self.recent_above_threshold.labels(health.compressor_id).set(health.rate)
            self.calibrated_above_threshold.labels(health.compressor_id).set(health.calibrated_rate)
        try:
            self.observe_checkpoints(executor.engine, executor.tables, executor.settings)
        except (sa.exc.SQLAlchemyError, ValueError) as exc:
            log.warning("metrics: could not read checkpoint lag: %s", str(exc).splitlines()[0])
        (self.runs_succeeded if report.ok else self.runs_failed).inc()
        self.observe_run(report.ok)

    def on_run_failed(self, executor: Executor, mode: str, exc: BaseException, duration_s: float) -> None:
        self.run_duration.observe(duration_s)
        self.observe_model(executor.model_info())
        self.runs_failed.inc()
        self.observe_run(False)

    def observe_model(self, info: dict[str, str] | None) -> None:
        if info is not None:
            self.model.info(info)

    def observe_run(self, succeeded: bool) -> None:
        ended = time.time()
        self.last_run.set(ended)
        self.last_run_success.set(1 if succeeded else 0)
        if succeeded:
            self.last_success.set(ended)

    def observe_checkpoints(self, engine: sa.Engine, tables, settings, now: datetime | None = None) -> None:
        """Set lag, age and open episode of every checkpointed compressor (one indexed MAX query per
        compressor) and the count of undelivered notifications in the outbox."""
        now = now or utcnow()
        ts = tables.source.c[settings.source.timestamp_column]
        cid_column = tables.source.c[settings.source.compressor_column]
        with engine.connect() as conn:
            self.notifications_pending.set(sum(entry["pending"] for entry in pending_counts(conn, tables).values()))
            for cid, checkpoint in read_checkpoints(conn, tables).items():
                if checkpoint.last_timestamp is None:
                    continue
                state = AlarmState.decode(checkpoint.alarm_state, checkpoint.consecutive_count)
                self.alert_open.labels(cid).set(1 if state.open else 0)
                latest = conn.execute(sa.select(sa.func.max(ts)).where(cid_column == cid)).scalar()
                self.checkpoint_age.labels(cid).set((now - checkpoint.last_timestamp).total_seconds())
                if latest is not None:
                    self.checkpoint_lag.labels(cid).set(max(0.0, (latest - checkpoint.last_timestamp).total_seconds()))


def expose(executor: Executor, host: str, port: int, interval_minutes: float) -> DaemonMetrics:
    """Observe the executor's runs and serve their metrics at http://host:port/metrics (a daemon thread)."""
    metrics = DaemonMetrics()
    metrics.run_interval.set(interval_minutes * 60)
    executor.observers.append(metrics)
    try:
        start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise PipelineError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    log.info("serving Prometheus metrics on http://%s:%d/metrics", host, port)
    return metrics
