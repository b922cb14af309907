"""The OPC UA collector: polls the plant on the sampling grid and fills the source table.

Per poll (on the wall-clock sampling grid, half a step after each grid point) one Read of every mapped node. A
compressor's row takes the latest timestamp among its values (source timestamps unless
[opcua] timestamp = "server"); a row whose timestamp is not newer than the last one is not a
new sample and is not written again. Values that are not Good (or not finite numbers) are
stored as missing, counted and logged. Rows go to the on-disk spool first and leave it only
once the database has committed them, idempotently on (compressor, timestamp): an outage of
the database, a reconnect or a restart never loses or duplicates a row. An unreachable server
is retried with exponential backoff; no row is invented for the time it was away, the gap is
reported. A stop request (SIGTERM) ends the current poll, writes what the spool holds when the
database is reachable, and returns.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.settings import Settings
from db.schema import Tables, create_all
from db.source import check_source_columns, write_new_telemetry
from pipeline.opcua_source import ConfigurationRefused, OpcUaSource, Sample
from pipeline.spool import Row, Spool

log = logging.getLogger(__name__)
DRAIN_ROWS = 5000
DB_RETRY_MAX_S = 60.0


@dataclass
class CollectReport:
    """Counters of one collect command (logged at the end, returned for tests and benchmarks)."""

    polls: int = 0
    missed_steps: int = 0
    rows_sampled: int = 0
    rows_unchanged: int = 0
    values_missing: Counter = field(default_factory=Counter)
    gaps: int = 0
    reconnects: int = 0
    rows_written: int = 0
    rows_already_stored: int = 0
    spool_dropped: int = 0
    spool_left: int = 0
    read_latencies_s: list[float] = field(default_factory=list)

    def summary(self) -> str:
        lat = np.array(self.read_latencies_s) * 1000 if self.read_latencies_s else np.zeros(1)
        missing = sum(self.values_missing.values())
        return (
            f"{self.polls} polls, {self.missed_steps} missed steps, {self.rows_sampled} rows sampled, {self.rows_unchanged} unchanged, "
            f"{missing} values missing, {self.gaps} gaps, {self.reconnects} reconnects, {self.rows_written} rows written, "
            f"{self.rows_already_stored} already stored, spool {self.spool_left} rows left ({self.spool_dropped} dropped), "
            f"read p50 {np.percentile(lat, 50):.1f} ms p99 {np.percentile(lat, 99):.1f} ms"
        )


class Collector:
    """One collector per source table and node map."""

    def __init__(self, settings: Settings, engine: sa.Engine, tables: Tables, source: OpcUaSource, spool: Spool, interval_s: float) -> None:
        self.settings, self.engine, self.tables = settings, engine, tables
        self.source, self.spool, self.interval_s = source, spool, interval_s
        self.report = CollectReport()
        self._last: dict[str, datetime] = {}
        self._db_ready = False
        self._db_down_since: float | None = None
        self._db_next_try = 0.0
        self._db_delay = 1.0
        self._drain_lock = threading.Lock()

    # ------------------------------------------------------------------ sampling
    def rows_from(self, samples: list[Sample], poll_time: datetime) -> list[Row]:
        """New rows of this poll, one per compressor whose timestamp moved on (none without any timestamp).

        Values that are not Good are counted once, in the row that stores them as missing.
        """
        by_compressor: dict[str, list[tuple[str, Sample]]] = {}
        for (cid, signal, _), sample in zip(self.source.nodes, samples):
            by_compressor.setdefault(cid, []).append((signal, sample))
        rows: list[Row] = []
        bad: list[str] = []
        statuses: Counter = Counter()
        max_gap = timedelta(seconds=self.settings.max_gap_s)
        for cid, readings in by_compressor.items():
            stamps = [s.timestamp for _, s in readings if s.timestamp is not None]
            ts = max(stamps) if stamps else None
            last = self._last.get(cid)
            if ts is None or (last is not None and ts <= last):  # no new sample (none is invented)
                self.report.rows_unchanged += 1
                continue
            if last is not None and ts - last > max_gap:
                steps = round((ts - last).total_seconds() / self.settings.data.sampling_interval_s) - 1
                self.report.gaps += 1
                log.warning("gap: compressor %s has no samples between %s and %s (about %d sampling steps); none invented", cid, last, ts, steps)
            self._last[cid] = ts
            rows.append((cid, ts, {signal: s.value for signal, s in readings}))
            for signal, s in readings:
                if s.value is None:
                    statuses[s.status] += 1
                    bad.append(f"{cid}.{signal}={s.status}")
        if bad:
            self.report.values_missing.update(statuses)
            log.warning("poll %s: %d value(s) not Good, stored as missing (%s; e.g. %s)", poll_time, len(bad),
                        ", ".join(f"{k} x{n}" for k, n in statuses.most_common()), ", ".join(bad[:3]))
        return rows

    # ------------------------------------------------------------------ database
    def drain(self, final: bool = False) -> None:
        """Write the spool to the database, oldest first, until it is empty or the database fails."""
        if not self._drain_lock.acquire(blocking=final):
            return
        try:
            if not final and time.monotonic() < self._db_next_try:
                return
            while True:
                seq, rows = self.spool.head(DRAIN_ROWS)
                if not rows:
                    break
                started = time.perf_counter()
                try:
                    written, stored = self._write(rows)
                except sa.exc.SQLAlchemyError as exc:
                    self._db_failed(exc)
                    return
                self.spool.remove_through(seq)
                self.report.rows_written += written
                self.report.rows_already_stored += stored
                if self._db_down_since is not None:
                    log.info("database is back after %.1f s: draining the spool", time.monotonic() - self._db_down_since)
                    self._db_down_since, self._db_delay = None, 1.0
                log.debug("wrote %d rows (%d already stored) in %.3f s", written, stored, time.perf_counter() - started)
        finally:
            self._drain_lock.release()

    def _write(self, rows: list[Row]) -> tuple[int, int]:
        if not self._db_ready:
            create_all(self.engine, self.tables)
            with self.engine.connect() as conn:
                check_source_columns(conn, self.tables, self.settings)
            self._db_ready = True
        src = self.settings.source
        frame = pd.DataFrame([values for _, _, values in rows], columns=list(self.settings.data.features), dtype=np.float64)
        frame.insert(0, src.compressor_column, [cid for cid, _, _ in rows])
        frame.insert(0, src.timestamp_column, pd.to_datetime([ts for _, ts, _ in rows]).as_unit("us"))
        with self.engine.begin() as conn:
            return write_new_telemetry(conn, self.tables, self.settings, frame)

    def _db_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._db_down_since is None:
            self._db_down_since = now
            log.error("database write failed (%s): keeping samples in the spool %s", str(exc).splitlines()[0][:200], self.spool.path)
        self._db_ready = False
        self._db_next_try = now + self._db_delay
        log.warning("database still unreachable; %d rows spooled; next try in %.0f s", len(self.spool), self._db_delay)
        self._db_delay = min(self._db_delay * 2, DB_RETRY_MAX_S)

    # ------------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event, once: bool = False) -> CollectReport:
        """Poll until `stop` is set (or once); ConfigurationRefused ends it at once (after the final drain)."""
        drain_task: asyncio.Future | None = None
        try:
            await self._connect(stop, once)
            next_tick = time.time() if once else self._next_poll()
            while not stop.is_set():
                delay = next_tick - time.time()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        break
                    except asyncio.TimeoutError:
                        pass
                late = int((time.time() - next_tick) // self.interval_s)
                if late > 0:
                    self.report.missed_steps += late
                    next_tick += late * self.interval_s
                    log.warning("polling fell %d sampling step(s) behind; skipped them", late)
                poll_time = datetime.fromtimestamp(round(next_tick, 3), timezone.utc).replace(tzinfo=None)
                started = time.perf_counter()
                try:
                    samples = await self.source.read()
                except ConfigurationRefused:
                    raise
                except Exception as exc:  # noqa: BLE001 - the server or the network went away
                    if once:
                        raise ConnectionError(f"reading from the OPC UA server at {self.settings.opcua.endpoint} failed: {_reason(exc)}") from None
                    await self._reconnect(stop, exc)
                    next_tick = self._next_poll()
                    continue
                self.report.read_latencies_s.append(time.perf_counter() - started)
                self.report.polls += 1
                rows = self.rows_from(samples, poll_time)
                self.report.rows_sampled += len(rows)
                self.spool.append(rows)
                if drain_task is None or drain_task.done():
                    drain_task = asyncio.get_running_loop().run_in_executor(None, self.drain)
                if once:
                    break
                next_tick += self.interval_s
        finally:
            if drain_task is not None:
                await asyncio.shield(drain_task)
            await self.source.close()
            await asyncio.get_running_loop().run_in_executor(None, self.drain, True)
            self.report.spool_left = len(self.spool)
            self.report.spool_dropped = self.spool.dropped
        return self.report

    def _next_poll(self) -> float:
        """The next poll time: half a step after a grid point (k + 1/2) x interval, so that values
        stamped at the grid point have reached the server whatever the small clock offsets."""
        return (math.floor(time.time() / self.interval_s - 0.5) + 1.5) * self.interval_s

    async def _connect(self, stop: asyncio.Event, once: bool) -> None:
        try:
            await self.source.connect()
        except ConfigurationRefused:
            raise
        except Exception as exc:  # noqa: BLE001
            if once:
                raise ConnectionError(f"cannot reach the OPC UA server at {self.settings.opcua.endpoint}: {_reason(exc)}") from None
            await self._reconnect(stop, exc)

    async def _reconnect(self, stop: asyncio.Event, exc: Exception) -> None:
        """Reconnect with exponential backoff (1 s doubling to reconnect_max_delay_s) until connected or stopped."""
        lost_at = time.monotonic()
        log.warning("OPC UA server %s unreachable (%s); reconnecting with backoff", self.settings.opcua.endpoint, _reason(exc))
        await self.source.close()
        delay = 1.0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.source.connect()
            except ConfigurationRefused:
                raise
            except Exception as again:  # noqa: BLE001
                log.warning("reconnect to %s failed (%s); next try in %.0f s", self.settings.opcua.endpoint, _reason(again), min(delay * 2, self.settings.opcua.reconnect_max_delay_s))
                delay = min(delay * 2, self.settings.opcua.reconnect_max_delay_s)
                continue
            down = time.monotonic() - lost_at
            self.report.reconnects += 1
            log.warning("reconnected to %s after %.1f s: about %d sampling steps not read (gap reported per compressor on the next sample)",
                        self.settings.opcua.endpoint, down, int(down // self.interval_s))
            return


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
