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
from dataclasses import dataclass
from pathlib import Path

from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from core.errors import PipelineError
from core.settings import Settings
from db.engine import make_engine, safe_url
from models.artifacts import current_version, read_metadata
from pipeline.batch import BatchOutcome
from scheduler.executor import Executor, Job, RunReport
from scheduler.runner import Runner

log = logging.getLogger(__name__)

DEFAULT_TASK_RETRIES = 2
WORKER_WAIT_S = 60.0


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

    def __init__(self, settings: Settings, version: str, owner: str, long_lived: bool = False) -> None:
        self.settings = settings
        self.version = version
        self.owner = owner
        self.long_lived = long_lived  # the client is a daemon: its workers score every call compiled, as a local daemon does
        self.runner: Runner | None = None

    def _load(self, address: str) -> None:
        started = time.perf_counter()
        model_dir = Path(os.environ.get("COMPRESSOR_AD_MODEL_DIR") or self.settings.model_dir)
        settings = self.settings.replace(model_dir=model_dir)
        bundle = cached_bundle(str(model_dir), self.version, tuple(settings.data.features))
        runner = Runner(settings, make_engine(settings.db_url), bundle, long_lived=self.long_lived)
        runner.owner = self.owner
        self.runner = runner
        log.info("worker %s: loaded model %s from %s in %.2f s", address, self.version, model_dir, time.perf_counter() - started)

    async def setup(self, worker) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._load, worker.address)

    def teardown(self, worker) -> None:
        if self.runner is not None:
            self.runner.engine.dispose()
            self.runner = None


@dataclass
class TaskResult:
    """A task's answer: the batch outcome (None: another scheduler holds the lease), the worker ("" when the
    task never returned), the batch's duration there."""

    outcome: BatchOutcome | None
    worker: str
    duration_s: float


def score_compressor(plugin_name: str, cid: str, batch_id: str, job: Job) -> TaskResult:
    """Task body: one compressor through the worker's Runner; a PipelineError comes back as a failed outcome."""
    worker = get_worker()
    plugin = worker.plugins.get(plugin_name)
    runner = getattr(plugin, "runner", None)
    if runner is None:
        raise PipelineError(f"worker {worker.address} has no model loaded for this run ({plugin_name})")
    try:
        outcome = runner.one(cid, batch_id, job)
    except PipelineError as exc:
        outcome = BatchOutcome(cid, job.mode, status="failed", message=str(exc).splitlines()[0][:500])
    return TaskResult(outcome, worker.address, outcome.duration_s if outcome else 0.0)


class DaskExecutor(Executor):
    """Spreads the compressors of a run over a Dask cluster, one task each; use as a context manager."""

    def __init__(self, settings: Settings, address: str, retries: int = DEFAULT_TASK_RETRIES) -> None:
        settings = settings.replace(model_dir=Path(settings.model_dir).resolve())
        super().__init__(settings, make_engine(settings.db_url))
        self.address = address
        self.retries = retries
        self.plugin_name = f"compressor-ad-{self.owner}"
        self.version: str | None = None
        self.detector: str | None = None
        self._calibration: dict[str, dict] = {}
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

    def _prepare_model(self, mode: str) -> None:
        """Pin the promoted version on every worker (once per executor, whatever the mode)."""
        if self.version is not None:
            return
        version = current_version(self.settings.model_dir)
        metadata = read_metadata(self.settings.model_dir, version)
        started = time.perf_counter()
        self.client.register_plugin(ModelPlugin(self.settings, version, self.owner, self.long_lived), name=self.plugin_name)
        self.version, self.detector, self._calibration = version, metadata["detector"], metadata.get("calibration", {})
        log.info("model %s (%s, %d compressors) loaded on every worker in %.2f s", version, metadata["detector"], len(metadata["compressors"]), time.perf_counter() - started)

    def model_info(self) -> dict[str, str] | None:
        return {"version": self.version, "detector": self.detector} if self.version else None

    def calibration(self) -> dict[str, dict]:
        return self._calibration

    def _execute(self, job: Job, compressors: list[str], report: RunReport) -> None:
        """One task per compressor, results taken as they complete; a stop request cancels the unfinished ones."""
        workers = len(self.client.scheduler_info(n_workers=-1)["workers"])
        log.info("%s run %s: %d compressors on %s, model %s, %d Dask workers", job.mode, report.batch_id, len(compressors), safe_url(self.engine.url), self.version, workers)
        keys = {f"{job.mode}-{report.batch_id}-{cid}": cid for cid in compressors}
        pending = as_completed(
            self.client.submit(score_compressor, self.plugin_name, cid, report.batch_id, job, key=key, retries=self.retries, pure=False)
            for key, cid in keys.items()
        )
        outcomes: dict[str, BatchOutcome] = {}
        for future in pending:
            cid = keys[future.key]
            try:
                result: TaskResult = future.result()
            except Exception as exc:  # noqa: BLE001 - any task error ends as this compressor's failure
                message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
                result = TaskResult(BatchOutcome(cid, job.mode, status="failed", message=message), "", 0.0)
            # Released at once: a result Dask still holds would be recomputed if its worker died later.
            future.release()
            if result.outcome is None:
                log.info("compressor %s [%s] leased by another scheduler: skipped this run (on %s)", cid, job.mode, result.worker)
            else:
                outcomes[cid] = self._received(result, report.batch_id)
                report.workers[cid] = result.worker
            if self.stop and pending.count():
                log.info("stop requested: cancelling %d compressors not finished in this run", pending.count())
                pending.clear()
                break
        for cid in compressors:
            outcome = outcomes.get(cid)
            if outcome is None:
                continue
            if outcome.status == "failed":
                report.failed.append(cid)
            else:
                report.outcomes.append(outcome)

    def _received(self, result: TaskResult, batch_id: str) -> BatchOutcome:
        """A worker's outcome on this process: its duration kept (perf_counter differs between hosts), logged, observed."""
        outcome = result.outcome
        outcome.started = time.perf_counter() - result.duration_s
        self._batch_done(outcome, batch_id, f" on {result.worker}" if result.worker else "")
        for when, signals in outcome.alerts:
            log.warning("ALERT compressor %s at %s: top signals %s", outcome.compressor_id, when, signals)
        return outcome
