"""Runs over the fleet on a Dask cluster: one task per compressor, the model loaded once per worker process.

Each worker process holds a `ModelPlugin`: at setup it loads the model version the client pinned
and builds a Runner around it. A task scores one compressor through that Runner's per-compressor
method, so the lease, the single transaction and the checkpoint are exactly those of a local run.
A task whose worker dies is rescheduled by Dask (`distributed.scheduler.allowed-failures`), one that
raises is retried (`retries`); the transaction of a dead attempt never commits, and the natural keys
of the result tables reject a second copy of a window, so a retry leaves no duplicates. Each result
is released as soon as the client has it, so Dask does not rerun a finished compressor when its
worker dies later; only a death between commit and hand-over reruns one, which then finds nothing
new (live) or replaces its rows with identical ones and logs a second summary row (backfill).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from core.errors import PipelineError
from core.settings import Settings
from db.engine import make_engine, safe_url
from db.schema import build_tables, create_all
from db.source import check_source_columns, list_compressors
from models.artifacts import current_version, read_metadata
from pipeline.batch import BatchOutcome
from scheduler import lease
from scheduler.notifier import deliver_after_run
from scheduler.retry import with_retries
from scheduler.runner import Runner, StopRequested, new_batch_id

log = logging.getLogger(__name__)

DEFAULT_TASK_RETRIES = 2
WORKER_WAIT_S = 60.0
_TOTALS = ("rows_read", "windows_scored", "anomaly_points", "triggered_events")


def connect(address: str) -> tuple[Client, contextlib.ExitStack]:
    """A client for `tcp://host:8786` (any scheme://) or for a new `local:N` cluster of N one-thread processes."""
    logging.getLogger("distributed").setLevel(logging.WARNING)
    closing = contextlib.ExitStack()
    if address.startswith("local:"):
        text = address.removeprefix("local:")
        if not text.isdigit() or int(text) < 1:
            raise PipelineError(f"--dask-address {address!r}: expected local:N with N >= 1 worker processes")
        cluster = closing.enter_context(LocalCluster(n_workers=int(text), threads_per_worker=1, processes=True, dashboard_address=None))
        client = closing.enter_context(Client(cluster))
        log.info("started a local Dask cluster of %s worker processes at %s", text, cluster.scheduler_address)
        return client, closing
    if "://" not in address:
        raise PipelineError(f"--dask-address {address!r}: expected tcp://host:8786 (an existing scheduler) or local:N")
    try:
        client = closing.enter_context(Client(address, timeout=30))
    except (OSError, TimeoutError) as exc:
        raise PipelineError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError as exc:
        closing.close()
        raise PipelineError(f"the Dask scheduler at {address} has no workers after {WORKER_WAIT_S:.0f} s") from exc
    log.info("connected to the Dask scheduler at %s (%d workers)", address, len(client.scheduler_info(n_workers=-1)["workers"]))
    return client, closing


@functools.lru_cache(maxsize=2)
def cached_bundle(model_dir: str, version: str, features: tuple[str, ...]):
    """A model version loaded (and, on first use, compiled) once per worker process, across runs and clients."""
    from models.artifacts import load_bundle

    return load_bundle(Path(model_dir), version, features)


class ModelPlugin(WorkerPlugin):
    """Per worker process: the pinned model version, loaded once, and a Runner that uses it."""

    def __init__(self, settings: Settings, version: str, owner: str) -> None:
        self.settings = settings
        self.version = version
        self.owner = owner
        self.runner: Runner | None = None

    def _load(self, address: str) -> None:
        started = time.perf_counter()
        model_dir = Path(os.environ.get("COMPRESSOR_AD_MODEL_DIR") or self.settings.model_dir)
        settings = self.settings.replace(model_dir=model_dir)
        bundle = cached_bundle(str(model_dir), self.version, tuple(settings.data.features))
        runner = Runner(settings, make_engine(settings.db_url), bundle)
        runner.owner = self.owner
        self.runner = runner
        log.info("worker %s: loaded model %s from %s in %.2f s", address, self.version, model_dir, time.perf_counter() - started)

    async def setup(self, worker) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._load, worker.address)

    def teardown(self, worker) -> None:
        if self.runner is not None:
            self.runner.engine.dispose()
            self.runner = None


def outcome_dict(outcome: BatchOutcome, worker: str) -> dict[str, Any]:
    """A BatchOutcome as plain values for the client."""
    return {
        "compressor_id": outcome.compressor_id,
        "mode": outcome.mode,
        "status": outcome.status,
        **{k: getattr(outcome, k) for k in (*_TOTALS, "rows_rejected", "gaps")},
        "reasons": dict(outcome.reasons),
        "range_start": outcome.range_start.isoformat() if outcome.range_start else None,
        "range_end": outcome.range_end.isoformat() if outcome.range_end else None,
        "model_version": outcome.model_version,
        "message": outcome.message,
        "alerts": [(when.isoformat(), signals) for when, signals in outcome.alerts],
        "duration_s": round(outcome.duration_s, 4),
        "log_line": outcome.log_line(),
        "worker": worker,
    }


def _not_scored(cid: str, mode: str, status: str, message: str, worker: str) -> dict[str, Any]:
    outcome = BatchOutcome(cid, mode, status=status, message=message)
    return outcome_dict(outcome, worker)


def score_compressor(plugin_name: str, cid: str, batch_id: str, job: dict[str, Any]) -> dict[str, Any]:
    """Task body: one compressor through the worker's Runner; PipelineErrors come back as a failed outcome."""
    worker = get_worker()
    plugin = worker.plugins.get(plugin_name)
    runner = getattr(plugin, "runner", None)
    if runner is None:
        raise PipelineError(f"worker {worker.address} has no model loaded for this run ({plugin_name})")
    mode = job["mode"]
    try:
        if mode == "live":
            outcome = runner.live_one(cid, batch_id, job["min_records"])
        else:
            outcome = runner.backfill_one(cid, batch_id, job["start"], job["end"], job["advance_checkpoint"])
    except PipelineError as exc:
        return _not_scored(cid, mode, "failed", str(exc).splitlines()[0][:500], worker.address)
    if outcome is None:
        return _not_scored(cid, mode, "leased", "leased by another scheduler, skipped this run", worker.address)
    return outcome_dict(outcome, worker.address)


@dataclass
class DaskReport:
    """Outcome of one run over the fleet on a Dask cluster."""

    batch_id: str
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


class DaskExecutor:
    """Spreads run_once/backfill over a Dask cluster; use as a context manager."""

    def __init__(self, settings: Settings, address: str, retries: int = DEFAULT_TASK_RETRIES) -> None:
        self.settings = settings.replace(model_dir=Path(settings.model_dir).resolve())
        self.address = address
        self.retries = retries
        self.owner = lease.make_owner_id()
        self.plugin_name = f"compressor-ad-{self.owner}"
        self.tables = build_tables(self.settings)
        self.engine = make_engine(self.settings.db_url)
        self.version: str | None = None
        self.stop = StopRequested()
        self.client: Client | None = None
        self._closing = contextlib.ExitStack()

    def __enter__(self) -> "DaskExecutor":
        self.client, closing = connect(self.address)
        self._closing.push(closing)
        return self

    def __exit__(self, *_exc) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # nothing registered, or the cluster is already gone
                self.client.unregister_worker_plugin(self.plugin_name)
        self._closing.close()
        self.engine.dispose()

    def _retry(self, action, what: str):
        cfg = self.settings.scheduler
        return with_retries(action, cfg.retry_attempts, cfg.retry_base_delay_s, what)

    def prepare(self) -> None:
        """Create missing result tables, check the source table, pin the promoted version on every worker."""

        def setup():
            create_all(self.engine, self.tables, include_source=False)
            with self.engine.connect() as conn:
                check_source_columns(conn, self.tables, self.settings)

        self._retry(setup, "preparing the database")
        if self.version is not None:
            return
        version = current_version(self.settings.model_dir)
        metadata = read_metadata(self.settings.model_dir, version)
        started = time.perf_counter()
        self.client.register_plugin(ModelPlugin(self.settings, version, self.owner), name=self.plugin_name)
        self.version = version
        log.info("model %s (%s, %d compressors) loaded on every worker in %.2f s", version, metadata["detector"], len(metadata["compressors"]), time.perf_counter() - started)

    def compressors(self, only: list[str] | None = None) -> list[str]:
        if only:
            return only

        def fetch():
            with self.engine.connect() as conn:
                return list_compressors(conn, self.tables, self.settings)

        return self._retry(fetch, "listing compressors")

    def _run(self, job: dict[str, Any], only: list[str] | None) -> DaskReport:
        started = time.perf_counter()
        mode = job["mode"]
        report = DaskReport(new_batch_id())
        self.prepare()
        compressors = self.compressors(only)
        workers = len(self.client.scheduler_info(n_workers=-1)["workers"])
        log.info("%s run %s: %d compressors on %s, model %s, %d Dask workers", mode, report.batch_id, len(compressors), safe_url(self.engine.url), self.version, workers)
        keys = {f"{mode}-{report.batch_id}-{cid}": cid for cid in compressors}
        pending = as_completed(
            self.client.submit(score_compressor, self.plugin_name, cid, report.batch_id, job, key=key, retries=self.retries, pure=False)
            for key, cid in keys.items()
        )
        results: dict[str, dict[str, Any]] = {}
        for future in pending:
            cid = keys[future.key]
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - any task error ends as this compressor's failure
                result = _not_scored(cid, mode, "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500], "?")
            # Released at once: a result Dask still holds would be recomputed if its worker died later.
            future.release()
            self._log(result)
            results[cid] = result
            if self.stop and pending.count():
                log.info("stop requested: cancelling %d compressors not finished in this run", pending.count())
                pending.clear()
                break
        for cid in compressors:
            result = results.get(cid)
            if result is None or result["status"] == "leased":
                continue
            if result["status"] == "failed":
                report.failed.append(cid)
            else:
                report.outcomes.append(result)
        report.duration_s = time.perf_counter() - started
        totals = {k: sum(o[k] for o in report.outcomes) for k in _TOTALS}
        log.info(
            "%s run %s finished in %.2f s: %d compressors, %s, %d failed",
            mode, report.batch_id, report.duration_s, len(report.outcomes),
            " ".join(f"{k}={v}" for k, v in totals.items()), len(report.failed),
        )
        deliver_after_run(self.engine, self.tables, self.settings)
        return report

    @staticmethod
    def _log(result: dict[str, Any]) -> None:
        line = f"{result['log_line']} on {result['worker']}"
        if result["status"] == "failed":
            log.error(line)
        else:
            log.info(line)
        for when, signals in result["alerts"]:
            log.warning("ALERT compressor %s at %s: top signals %s", result["compressor_id"], when, signals)

    def run_once(self, only: list[str] | None = None, min_records: int | None = None) -> DaskReport:
        """Score every compressor's new rows since its checkpoint, one Dask task per compressor."""
        return self._run({"mode": "live", "min_records": min_records}, only)

    def backfill(self, start: datetime, end: datetime, only: list[str] | None = None, advance_checkpoint: bool = False) -> DaskReport:
        """(Re)score a date range for every compressor, one Dask task per compressor; idempotent."""
        if end < start:
            raise PipelineError(f"backfill end {end} is before its start {start}")
        return self._run({"mode": "backfill", "start": start, "end": end, "advance_checkpoint": advance_checkpoint}, only)

    def run_forever(self, interval_minutes: float, min_records: int | None = None, max_runs: int | None = None) -> int:
        """Run now and then `interval_minutes` after each run ends, until SIGTERM/SIGINT; returns an exit code."""
        self.stop.install()
        runs = failed = 0
        while not self.stop and (max_runs is None or runs < max_runs):
            try:
                failed += 0 if self.run_once(min_records=min_records).ok else 1
            except PipelineError as exc:
                failed += 1
                log.error("run failed: %s", exc)
            runs += 1
            if max_runs is None or runs < max_runs:
                self.stop.wait(interval_minutes * 60)
        log.info("daemon stopped after %d runs (%d with failures)", runs, failed)
        return 0
