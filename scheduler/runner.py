"""The local executor: a run's compressors scored in this process, `parallelism()` at a time."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import sqlalchemy as sa

from core import faults
from core.errors import PipelineError
from core.settings import Settings
from db.engine import safe_url
from models.artifacts import ModelBundle, load_for_settings, metadata_for_settings
from pipeline.batch import BatchOutcome, ModelNeeded, backfill_batch, live_batch
from scheduler import lease
from scheduler.executor import Executor, Job, RunReport
from scheduler.retry import is_transient

log = logging.getLogger(__name__)


class Runner(Executor):
    """Holds the engine, tables and loaded model of one scheduler process and scores its compressors here."""

    def __init__(self, settings: Settings, engine: sa.Engine, bundle: ModelBundle | None = None, long_lived: bool = False) -> None:
        super().__init__(settings, engine)
        self.bundle = bundle
        self.long_lived = long_lived
        self._suit_model_to_process()

    def _prepare_model(self, mode: str) -> None:
        """A live run starts with the promoted model's metadata only; a backfill loads the model."""
        if mode == "live":
            if self.bundle is None:
                self.bundle = metadata_for_settings(self.settings)
        elif self.bundle is None or not self.bundle.loaded:
            self._load_model()
        self._suit_model_to_process()

    def _suit_model_to_process(self) -> None:
        """The one place of the daemon decision: a long-lived process (run_forever, a Dask worker) scores
        every call of the loaded model compiled; a one-run process keeps the detector's own choice."""
        if self.long_lived and self.bundle is not None and self.bundle.loaded:
            self.bundle.detector.for_many_runs()

    def _load_model(self) -> None:
        """The detector of the version in use (the promoted one when none is)."""
        started = time.perf_counter()
        self.bundle = load_for_settings(self.settings, self.bundle.version if self.bundle else None)
        self._suit_model_to_process()
        log.info(
            "loaded model %s (%s, %d compressors) in %.2f s",
            self.bundle.version, self.bundle.detector.name, len(self.bundle.compressors), time.perf_counter() - started,
        )

    def model_info(self) -> dict[str, str] | None:
        return {"version": self.bundle.version, "detector": self.bundle.detector.name} if self.bundle else None

    def calibration(self) -> dict[str, dict]:
        return self.bundle.calibration if self.bundle else {}

    def _run_note(self) -> str:
        return "" if self.bundle.loaded else "; nothing to score, model not loaded"

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

    def _work(self, job: Job, cid: str, batch_id: str) -> Callable[[sa.Connection], BatchOutcome]:
        if job.mode == "live":
            return lambda conn: live_batch(conn, self.tables, self.settings, self.bundle, cid, batch_id, job.min_records)
        return lambda conn: backfill_batch(conn, self.tables, self.settings, self.bundle, cid, job.start, job.end, batch_id, job.advance_checkpoint)

    def one(self, cid: str, batch_id: str, job: Job) -> BatchOutcome | None:
        """One compressor under its lease: `job` in one transaction that first confirms the lease (retrying
        transient errors), then the lease released. None: another scheduler holds it (live runs)."""
        cfg = self.settings.scheduler
        mode = job.mode
        try:
            if not self._take_lease(cid, mode):
                return None
            work = self._work(job, cid, batch_id)

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
        self._batch_done(outcome, batch_id)
        return outcome

    def parallelism(self) -> int:
        """Compressors scored at once: the setting, or 1 on SQLite (one writer at a time) and 2 on servers."""
        configured = self.settings.scheduler.parallel_compressors
        return configured or (1 if self.engine.dialect.name == "sqlite" else 2)

    def _execute(self, job: Job, compressors: list[str], report: RunReport) -> None:
        """`parallelism()` compressors at a time. A live run starts with the model's metadata only: compressors
        with windows to score raise ModelNeeded before writing anything, and only then is the model loaded
        and are those compressors run again (an hour scores in NumPy: TensorFlow starts only for a call
        large enough for the XLA graph, models/inference.py). One compressor's failure stops no other; a stop request or a database gone after
        retries ends the run before the next compressor."""
        mode = job.mode
        workers = max(1, min(self.parallelism(), len(compressors)))
        log.info(
            "%s run %s: %d compressors on %s, model %s%s, %d at a time",
            mode, report.batch_id, len(compressors), safe_url(self.engine.url), self.bundle.version,
            "" if self.bundle.loaded else " (loaded only if there is something to score)", workers,
        )
        abort = threading.Event()
        deferred: list[tuple[int, str]] = []

        def process(position: int, cid: str) -> BatchOutcome | None:
            if self.stop and not abort.is_set():
                abort.set()
                log.info("stopping before compressor %s (%d/%d)", cid, position, len(compressors))
            if abort.is_set():
                return None
            try:
                return self.one(cid, report.batch_id, job)
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
