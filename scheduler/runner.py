"""Runs: every compressor once (live or backfill), and the long-running daemon loop."""
from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

import schedule
import sqlalchemy as sa

from core import faults
from core.clock import utcnow
from core.errors import PipelineError
from core.settings import Settings
from core.timerange import check_timestamp
from db.engine import safe_url
from db.schema import Tables, build_tables, create_all
from db.ids import colliding_ids
from db.source import check_source_columns, list_compressors
from models.artifacts import ModelBundle, load_for_settings, metadata_for_settings
from pipeline.batch import BatchOutcome, ModelNeeded, backfill_batch, live_batch, write_summary
from scheduler import lease
from scheduler.notifier import deliver_after_run
from scheduler.retry import is_transient, with_retries

log = logging.getLogger(__name__)


def log_fields(outcome: BatchOutcome, batch_id: str) -> dict:
    """The JSON log fields of one batch (core.logs.FIELDS)."""
    return {
        "compressor": outcome.compressor_id, "batch_id": batch_id, "mode": outcome.mode, "status": outcome.status,
        "rows_read": outcome.rows_read, "windows_scored": outcome.windows_scored, "anomaly_points": outcome.anomaly_points,
        "triggered_events": outcome.triggered_events, "rows_rejected": outcome.rows_rejected, "duration_s": round(outcome.duration_s, 3),
    }


def new_batch_id() -> str:
    return f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass
class RunReport:
    """Outcome of one run over the fleet."""

    batch_id: str
    outcomes: list[BatchOutcome] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


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


class Runner:
    """Holds the engine, tables and loaded model of one scheduler process."""

    def __init__(self, settings: Settings, engine: sa.Engine, bundle: ModelBundle | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.tables: Tables = build_tables(settings)
        self.bundle = bundle
        self.owner = lease.make_owner_id()
        self.stop = StopRequested()
        self.on_batch: Callable[[BatchOutcome], None] | None = None

    def _retry(self, action, what: str):
        cfg = self.settings.scheduler
        return with_retries(action, cfg.retry_attempts, cfg.retry_base_delay_s, what)

    def prepare(self, metadata_only: bool = False) -> None:
        """Create missing result tables, check the source table, load the promoted model (only its metadata: `metadata_only`)."""

        def setup():
            create_all(self.engine, self.tables, include_source=False)
            with self.engine.connect() as conn:
                check_source_columns(conn, self.tables, self.settings)

        self._retry(setup, "preparing the database")
        if self.bundle is None and metadata_only:
            self.bundle = metadata_for_settings(self.settings)
        elif not metadata_only and (self.bundle is None or not self.bundle.loaded):
            self._load_model()

    def _load_model(self) -> None:
        """The detector of the version in use (the promoted one when none is)."""
        started = time.perf_counter()
        self.bundle = load_for_settings(self.settings, self.bundle.version if self.bundle else None)
        log.info(
            "loaded model %s (%s, %d compressors) in %.2f s",
            self.bundle.version, self.bundle.detector.name, len(self.bundle.compressors), time.perf_counter() - started,
        )

    def compressors(self, only: list[str] | None = None) -> list[str]:
        if only:
            return only

        def fetch():
            with self.engine.connect() as conn:
                return list_compressors(conn, self.tables, self.settings)

        return self._retry(fetch, "listing compressors")

    def _refuse_colliding(self, compressors: list[str], mode: str, report: "RunReport") -> list[str]:
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

    def _take_lease(self, cid: str, mode: str) -> bool:
        """Live runs skip a compressor another scheduler holds; a backfill waits up to one lease period."""
        cfg = self.settings.scheduler
        take = lease.wait_acquire if mode == "backfill" else lease.acquire
        if self._retry(lambda: take(self.engine, self.tables, cid, self.owner, cfg.lease_seconds), f"lease {cid}"):
            return True
        owner, expires = lease.holder(self.engine, self.tables, cid)
        if mode == "backfill":
            raise lease.LeaseLost(f"compressor {cid}: still leased by {owner} (until {expires}); backfill not done, run it again")
        log.warning(
            "compressor %s [%s] leased by %s until %s UTC: skipped this run (the holder is alive or on another host)",
            cid, mode, owner, expires, extra={"compressor": cid, "mode": mode, "status": "skipped", "lease_owner": owner},
        )
        return False

    def _one(self, cid: str, batch_id: str, work: Callable[[sa.Connection], BatchOutcome], mode: str) -> BatchOutcome | None:
        """Lease, run `work` in one transaction that first confirms the lease (retrying transient errors), release."""
        cfg = self.settings.scheduler
        try:
            if not self._take_lease(cid, mode):
                return None

            def transaction():
                with self.engine.begin() as conn:
                    lease.confirm(conn, self.tables, cid, self.owner, cfg.lease_seconds)
                    return work(conn)

            try:
                outcome = self._retry(transaction, f"compressor {cid}")
                faults.hit("release")
            finally:
                try:
                    lease.release(self.engine, self.tables, cid, self.owner)
                except sa.exc.SQLAlchemyError as exc:
                    log.warning("compressor %s: could not release the lease (it will expire): %s", cid, str(exc).splitlines()[0])
        except ModelNeeded:
            raise
        except lease.LeaseLost as exc:
            if mode != "live":
                self._fail(cid, mode, batch_id, exc)
                raise
            log.warning("%s; skipped this run", exc)
            return None
        except Exception as exc:
            self._fail(cid, mode, batch_id, exc)
            raise
        log.info(outcome.log_line(), extra=log_fields(outcome, batch_id))
        if self.on_batch:
            self.on_batch(outcome)
        return outcome

    def _fail(self, cid: str, mode: str, batch_id: str, exc: BaseException) -> None:
        outcome = BatchOutcome(cid, mode, status="failed", message=str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__)
        outcome.model_version = self.bundle.version if self.bundle else None
        self._record_failure(outcome, batch_id)

    def _record_failure(self, outcome: BatchOutcome, batch_id: str) -> None:
        log.error(outcome.log_line(), extra=log_fields(outcome, batch_id))
        try:
            with self.engine.begin() as conn:
                write_summary(conn, self.tables, outcome, batch_id)
        except sa.exc.SQLAlchemyError:
            log.error("compressor %s: the failure could not be recorded in %s either", outcome.compressor_id, self.tables.summary.name)

    def parallelism(self) -> int:
        """Compressors scored at once: the setting, or 1 on SQLite (one writer at a time) and 2 on servers."""
        configured = self.settings.scheduler.parallel_compressors
        return configured or (1 if self.engine.dialect.name == "sqlite" else 2)

    def _run(self, mode: str, make_work: Callable[[str, str], Callable[[sa.Connection], BatchOutcome]], only: list[str] | None) -> RunReport:
        """Every compressor once. A live run starts with the model's metadata only: compressors with
        windows to score raise ModelNeeded before writing anything, and only then is the model
        loaded (TensorFlow started) and are those compressors run again; a run with nothing to
        score never starts TensorFlow."""
        started = time.perf_counter()
        report = RunReport(new_batch_id())
        self.prepare(metadata_only=mode == "live")
        compressors = self._refuse_colliding(self.compressors(only), mode, report)
        workers = max(1, min(self.parallelism(), len(compressors)))
        log.info(
            "%s run %s: %d compressors on %s, model %s%s, %d at a time",
            mode, report.batch_id, len(compressors), safe_url(self.engine.url), self.bundle.version,
            "" if self.bundle.loaded else " (loaded only if there is something to score)", workers,
        )
        abort = threading.Event()  # stop requested, or the database is gone (one compressor's own failure stops no other)
        deferred: list[tuple[int, str]] = []

        def process(position: int, cid: str) -> BatchOutcome | None:
            if self.stop and not abort.is_set():
                abort.set()
                log.info("stopping before compressor %s (%d/%d)", cid, position, len(compressors))
            if abort.is_set():
                return None
            try:
                return self._one(cid, report.batch_id, make_work(cid, report.batch_id), mode)
            except ModelNeeded:
                deferred.append((position, cid))
            except PipelineError as exc:
                report.failed.append(cid)
                log.error("compressor %s: %s", cid, exc)
            except Exception as exc:
                report.failed.append(cid)
                if not is_transient(exc):
                    log.error("compressor %s failed, the others go on: %s", cid, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    log.debug("compressor %s failed", cid, exc_info=True)
                    return None
                if not abort.is_set():
                    abort.set()
                    log.error("database unreachable after retries; ending the run: %s", str(exc).splitlines()[0])
            return None

        def each(items: list[tuple[int, str]]) -> dict[int, BatchOutcome | None]:
            if workers == 1 or len(items) == 1:
                return {position: process(position, cid) for position, cid in items}
            with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="compressor") as pool:
                return dict(zip((p for p, _ in items), pool.map(lambda item: process(*item), items)))

        outcomes = each(list(enumerate(compressors, start=1)))
        if deferred and not abort.is_set():
            log.info("%d of %d compressors have windows to score: loading model %s", len(deferred), len(compressors), self.bundle.version)
            self._load_model()
            outcomes.update(each(sorted(deferred)))
        report.outcomes = [outcomes[position] for position in sorted(outcomes) if outcomes[position]]
        report.duration_s = time.perf_counter() - started
        totals = {k: sum(getattr(o, k) for o in report.outcomes) for k in ("rows_read", "windows_scored", "anomaly_points", "triggered_events")}
        log.info(
            "%s run %s finished in %.2f s: %d compressors, %s, %d failed%s",
            mode, report.batch_id, report.duration_s, len(report.outcomes),
            " ".join(f"{k}={v}" for k, v in totals.items()), len(report.failed),
            "" if self.bundle.loaded else "; nothing to score, model not loaded",
            extra={"batch_id": report.batch_id, "mode": mode, "duration_s": round(report.duration_s, 3), **totals},
        )
        deliver_after_run(self.engine, self.tables, self.settings)
        return report

    def run_once(self, only: list[str] | None = None, min_records: int | None = None) -> RunReport:
        """Score every compressor's new rows since its checkpoint."""
        needed = self.settings.scheduler.min_records if min_records is None else min_records

        def make_work(cid, batch_id):
            return lambda conn: live_batch(conn, self.tables, self.settings, self.bundle, cid, batch_id, needed)

        return self._run("live", make_work, only)

    def backfill(self, start: datetime, end: datetime, only: list[str] | None = None, advance_checkpoint: bool = False) -> RunReport:
        """(Re)score a date range for every compressor; idempotent."""
        start, end = check_timestamp(start, "backfill start"), check_timestamp(end, "backfill end")
        if end < start:
            raise PipelineError(f"backfill end {end} is before its start {start}")

        def make_work(cid, batch_id):
            return lambda conn: backfill_batch(conn, self.tables, self.settings, self.bundle, cid, start, end, batch_id, advance_checkpoint)

        return self._run("backfill", make_work, only)

    def live_one(self, cid: str, batch_id: str, min_records: int | None = None) -> BatchOutcome | None:
        """One compressor of a live run under its lease and transaction (for executors that spread compressors)."""
        needed = self.settings.scheduler.min_records if min_records is None else min_records
        return self._one(cid, batch_id, lambda conn: live_batch(conn, self.tables, self.settings, self.bundle, cid, batch_id, needed), "live")

    def backfill_one(self, cid: str, batch_id: str, start: datetime, end: datetime, advance_checkpoint: bool = False) -> BatchOutcome | None:
        """One compressor of a backfill under its lease and transaction (for executors that spread compressors)."""
        return self._one(
            cid, batch_id, lambda conn: backfill_batch(conn, self.tables, self.settings, self.bundle, cid, start, end, batch_id, advance_checkpoint), "backfill"
        )

    def run_forever(self, interval_minutes: float, min_records: int | None = None, max_runs: int | None = None) -> int:
        """Run now and then every `interval_minutes` until SIGTERM/SIGINT; returns an exit code."""
        self.stop.install()
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
