"""The executor core shared by the local Runner and the DaskExecutor.

An executor prepares the database, lists the compressors, runs one job (live or backfill) over
them and returns one RunReport; its daemon loop repeats live runs at a fixed rate. Subclasses
decide only how the model is made ready (`_prepare_model`, `model_info`) and how the compressors
are executed (`_execute`). Observers are told of every batch and of the end of every run.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import schedule
import sqlalchemy as sa

from core.clock import utcnow
from core.errors import PipelineError
from core.settings import Settings
from core.timerange import check_timestamp
from db.ids import colliding_ids
from db.schema import Tables, build_tables, create_all
from db.source import check_source_columns, list_compressors
from pipeline.batch import BatchOutcome, write_summary
from scheduler import lease
from scheduler.notifier import deliver_after_run
from scheduler.retry import with_retries
from scheduler.threshold_health import ThresholdHealth, check_thresholds

log = logging.getLogger(__name__)

TOTALS = ("rows_read", "windows_scored", "anomaly_points", "triggered_events")


def log_fields(outcome: BatchOutcome, batch_id: str) -> dict:
    """The JSON log fields of one batch (core.logs.FIELDS)."""
    return {
        "compressor": outcome.compressor_id, "batch_id": batch_id, "mode": outcome.mode, "status": outcome.status,
        "rows_read": outcome.rows_read, "windows_scored": outcome.windows_scored, "anomaly_points": outcome.anomaly_points,
        "triggered_events": outcome.triggered_events, "rows_rejected": outcome.rows_rejected, "duration_s": round(outcome.duration_s, 3),
    }


def new_batch_id() -> str:
    return f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Job:
    """What a run does to each compressor: a live batch of at least `min_records` new rows, or a backfill of [start, end]."""

    mode: str
    min_records: int = 0
    start: datetime | None = None
    end: datetime | None = None
    advance_checkpoint: bool = False


@dataclass
class RunReport:
    """Outcome of one run over the fleet: the batches that ran (in compressor order) and the compressors that failed.

    A compressor skipped because another scheduler holds its lease is in neither list. `workers`: where
    each compressor's task ran (the Dask worker's address; empty for the local executor). `thresholds`:
    the threshold check of each compressor a live run scored (scheduler/threshold_health.py).
    """

    batch_id: str
    mode: str
    outcomes: list[BatchOutcome] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    workers: dict[str, str] = field(default_factory=dict)
    thresholds: list[ThresholdHealth] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def totals(self) -> dict[str, int]:
        return {k: sum(getattr(o, k) for o in self.outcomes) for k in TOTALS}


class RunObserver:
    """Told of a run's events in order: on_run_started, on_batch for every compressor that ended (failed
    ones included, lease skips not), then on_run, or on_run_failed when the run itself raised.
    on_batch may be called from several threads at once. The methods here do nothing."""

    def on_run_started(self, executor: "Executor", mode: str) -> None:
        pass

    def on_batch(self, outcome: BatchOutcome) -> None:
        pass

    def on_run(self, executor: "Executor", report: RunReport) -> None:
        pass

    def on_run_failed(self, executor: "Executor", mode: str, exc: BaseException, duration_s: float) -> None:
        pass


class StopRequested:
    """Set by SIGTERM/SIGINT; checked between compressors so a batch in flight finishes."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_args) -> None:
        if not self._event.is_set():
            log.info("stop requested: finishing the batch in flight, then exiting")
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.set)
        signal.signal(signal.SIGINT, self.set)


class Executor:
    """Settings, engine, tables, lease owner and stop flag of one scheduler process, and the run flow around `_execute`."""

    def __init__(self, settings: Settings, engine: sa.Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.tables: Tables = build_tables(settings)
        self.owner = lease.make_owner_id()
        self.stop = StopRequested()
        self.observers: list[RunObserver] = []
        self.long_lived = False  # set by run_forever: the model will score many runs in this process

    # ---------------------------------------------------------------- what subclasses decide
    def _prepare_model(self, mode: str) -> None:
        raise NotImplementedError

    def model_info(self) -> dict[str, str] | None:
        """{"version", "detector"} of the model in use, None before one is known."""
        raise NotImplementedError

    def calibration(self) -> dict[str, dict]:
        """Per compressor, how the threshold of the model in use was calibrated (models/calibration.py)."""
        raise NotImplementedError

    def _execute(self, job: Job, compressors: list[str], report: RunReport) -> None:
        """Run `job` for each compressor: its outcomes (in compressor order) and failures into `report`,
        each ended batch passed to `_batch_done`."""
        raise NotImplementedError

    def _run_note(self) -> str:
        """Appended to the "run ... finished" line."""
        return ""

    # ---------------------------------------------------------------- shared
    def _retry(self, action, what: str):
        cfg = self.settings.scheduler
        return with_retries(action, cfg.retry_attempts, cfg.retry_base_delay_s, what)

    def prepare(self, mode: str = "backfill") -> None:
        """Create missing result tables, check the source table, then make the model ready for a run of `mode`."""

        def setup():
            create_all(self.engine, self.tables, include_source=False)
            with self.engine.connect() as conn:
                check_source_columns(conn, self.tables, self.settings)

        self._retry(setup, "preparing the database")
        self._prepare_model(mode)

    def compressors(self, only: list[str] | None = None) -> list[str]:
        if only:
            return only

        def fetch():
            with self.engine.connect() as conn:
                return list_compressors(conn, self.tables, self.settings)

        return self._retry(fetch, "listing compressors")

    def _refuse_colliding(self, compressors: list[str], mode: str, report: RunReport) -> list[str]:
        """The compressors without the ids the database cannot tell apart, each of those a failure naming the others."""

        def check():
            with self.engine.connect() as conn:
                return colliding_ids(conn, self.tables, self.settings, compressors)

        refused = self._retry(check, "checking compressor ids")
        for cid, others in refused.items():
            alike = ", ".join(repr(o) for o in others) or "another id"
            reason = (
                f"compressor id {cid!r} is equal to {alike} under the database's collation, so their rows and results would be merged: "
                "rename one in the source table (or give its id column a binary collation); not scored"
            )
            report.failed.append(cid)
            self._fail(cid, mode, report.batch_id, PipelineError(reason))
        return [cid for cid in compressors if cid not in refused]

    def _fail(self, cid: str, mode: str, batch_id: str, exc: BaseException) -> None:
        """A failed batch: logged, told to the observers and recorded in the summary table."""
        outcome = BatchOutcome(cid, mode, status="failed", message=str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__)
        outcome.model_version = (self.model_info() or {}).get("version")
        self._batch_done(outcome, batch_id)
        try:
            with self.engine.begin() as conn:
                write_summary(conn, self.tables, outcome, batch_id)
        except sa.exc.SQLAlchemyError:
            log.error("compressor %s: the failure could not be recorded in %s either", outcome.compressor_id, self.tables.summary.name)

    def _batch_done(self, outcome: BatchOutcome, batch_id: str, where: str = "") -> None:
        """One log line for an ended batch (ERROR when it failed; `where` names the worker), then the observers."""
        level = logging.ERROR if outcome.status == "failed" else logging.INFO
        log.log(level, outcome.log_line() + where, extra=log_fields(outcome, batch_id))
        for observer in self.observers:
            observer.on_batch(outcome)

    def _run(self, job: Job, only: list[str] | None) -> RunReport:
        """Every compressor once; observers are told of the start and of the end, whether it returns or raises."""
        started = time.perf_counter()
        for observer in self.observers:
            observer.on_run_started(self, job.mode)
        report = RunReport(new_batch_id(), job.mode)
        try:
            self.prepare(job.mode)
            compressors = self._refuse_colliding(self.compressors(only), job.mode, report)
            self._execute(job, compressors, report)
            report.duration_s = time.perf_counter() - started
            totals = report.totals()
            log.info(
                "%s run %s finished in %.2f s: %d compressors, %s, %d failed%s",
                job.mode, report.batch_id, report.duration_s, len(report.outcomes),
                " ".join(f"{k}={v}" for k, v in totals.items()), len(report.failed), self._run_note(),
                extra={"batch_id": report.batch_id, "mode": job.mode, "duration_s": round(report.duration_s, 3), **totals},
            )
            deliver_after_run(self.engine, self.tables, self.settings)
            if job.mode == "live":
                self._check_thresholds(report)
        except Exception as exc:
            for observer in self.observers:
                observer.on_run_failed(self, job.mode, exc, time.perf_counter() - started)
            raise
        for observer in self.observers:
            observer.on_run(self, report)
        return report

    def _check_thresholds(self, report: RunReport) -> None:
        """The threshold check of every compressor scored in this run, into the report; a WARNING where it no longer holds."""
        scored: dict[str, list[str]] = {}
        for outcome in report.outcomes:
            if outcome.status == "ok" and outcome.windows_scored and outcome.model_version:
                scored.setdefault(outcome.model_version, []).append(outcome.compressor_id)
        for version, compressors in scored.items():
            report.thresholds += check_thresholds(self.engine, self.tables, self.settings, version, self.calibration(), compressors)

    def run_once(self, only: list[str] | None = None, min_records: int | None = None) -> RunReport:
        """Score every compressor's new rows since its checkpoint."""
        needed = self.settings.scheduler.min_records if min_records is None else min_records
        return self._run(Job("live", min_records=needed), only)

    def backfill(self, start: datetime, end: datetime, only: list[str] | None = None, advance_checkpoint: bool = False) -> RunReport:
        """(Re)score a date range for every compressor; idempotent."""
        start, end = check_timestamp(start, "backfill start"), check_timestamp(end, "backfill end")
        if end < start:
            raise PipelineError(f"backfill end {end} is before its start {start}")
        return self._run(Job("backfill", start=start, end=end, advance_checkpoint=advance_checkpoint), only)

    def run_forever(self, interval_minutes: float, min_records: int | None = None, max_runs: int | None = None) -> int:
        """Live runs until SIGTERM/SIGINT, on a `schedule` job: one now, the next `interval_minutes` after the
        daemon started (or when the first ends, if later), each later one `interval_minutes` after the previous
        run ended (`schedule` reschedules a job when it returns), so runs never overlap. With notification
        channels, pending notifications are retried every minute between runs. Returns an exit code."""
        self.stop.install()
        self.long_lived = True
        runs = {"count": 0, "failed": 0}

        def job():
            try:
                report = self.run_once(min_records=min_records)
                runs["failed"] += 0 if report.ok else 1
            except PipelineError as exc:
                runs["failed"] += 1
                log.error("run failed: %s", exc)
            runs["count"] += 1

        scheduler = schedule.Scheduler()
        scheduler.every(interval_minutes).minutes.do(job)
        if self.settings.notify.channels:  # failed deliveries come due between runs
            scheduler.every(1).minutes.do(deliver_after_run, self.engine, self.tables, self.settings)
        job()
        while not self.stop and (max_runs is None or runs["count"] < max_runs):
            scheduler.run_pending()
            self.stop.wait(min(1.0, max(0.05, scheduler.idle_seconds or 1.0)))
        log.info("daemon stopped after %d runs (%d with failures)", runs["count"], runs["failed"])
        return 0
