"""Delivering the notification outbox after the batches committed.

A notification row (db/alert_schema.py) is written in the transaction of the episode it
announces; this sender runs after the run's transactions committed. Per due row: claim it (a
short transaction; a second sender skips it), send it with up to `[notify] attempts` tries and
exponential backoff (tenacity; a refused login or TLS handshake ends the send after its first
try), then mark it sent, or record the error and the time of the next pass's try (backoff
doubling per try made, up to backoff_max_s). A crash before the claim or during the send
leaves the row pending, and the next run sends it: same idempotency key, so a receiver that
already had it (a crash after its reply, before the mark) can drop the copy.

With no channel configured nothing here runs, no channel module is imported, nothing is opened.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from core import faults
from core.clock import utcnow
from core.logs import mask_secrets, printable
from core.settings import Settings
from db import alerts as store
from db.schema import Tables

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    """Counts of one delivery pass; `held`: rows not tried because their channel refused login or TLS earlier in the pass."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    held: int = 0


def _claim_seconds(settings: Settings) -> float:
    """Longer than one row's tries can take, so a live sender never loses its claim."""
    n = settings.notify
    waits = sum(min(n.backoff_max_s, n.backoff_s * 2**i) for i in range(n.attempts))
    return n.attempts * max(n.webhook_timeout_s, n.smtp_timeout_s) + waits + 60.0


def _send(channel, row: dict, settings: Settings) -> tuple[int, Exception | None]:
    """(tries used, the last DeliveryError or None once delivered): up to `attempts` tries, but a
    PermanentDeliveryError (login or TLS refused) ends the send at once."""
    from tenacity import Retrying, retry_if_exception_type, retry_if_not_exception_type, stop_after_attempt, wait_exponential

    from scheduler.channels import DeliveryError, PermanentDeliveryError

    n = settings.notify
    tries = 0
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(n.attempts),
            wait=wait_exponential(multiplier=n.backoff_s, max=n.backoff_max_s),
            retry=retry_if_exception_type(DeliveryError) & retry_if_not_exception_type(PermanentDeliveryError),
            reraise=True,
        ):
            with attempt:
                tries = attempt.retry_state.attempt_number
                channel.send(row["idempotency_key"], row["payload"])
    except DeliveryError as exc:
        return tries, exc
    return tries, None


def deliver(engine: sa.Engine, tables: Tables, settings: Settings) -> DeliveryReport | None:
    """Send every due notification once; None when no channel is configured."""
    if not settings.notify.channels:
        return None
    from scheduler.channels import DeliveryError, PermanentDeliveryError, build_channels

    started = time.perf_counter()
    channels = build_channels(settings.notify)
    faults.hit("notify")
    report = DeliveryReport()
    with engine.connect() as conn:
        rows = store.due(conn, tables, utcnow())
    refused: set[str] = set()  # channels whose login or TLS was refused: one refusal per pass, not one per row
    for row in rows:
        if row["channel"] in refused:
            report.held += 1
            continue
        with engine.begin() as conn:
            if not store.claim(conn, tables, row["id"], utcnow(), _claim_seconds(settings)):
                report.skipped += 1
                continue
        channel = channels.get(row["channel"])
        what = f"notification {row['id']} ({row['kind']}, compressor {printable(row['compressor_id'], 64)}, episode {row['episode_start']:%Y-%m-%d %H:%M:%S})"
        if channel is None:
            tries, failure = 1, DeliveryError(f"channel {row['channel']} is no longer configured")
        else:
            tries, failure = _send(channel, row, settings)
        attempts = row["attempts"] + tries
        if failure is not None:
            delay = min(settings.notify.backoff_max_s, settings.notify.backoff_s * 2**attempts)
            error = mask_secrets(str(failure))
            with engine.begin() as conn:
                store.mark_failed(conn, tables, row["id"], attempts, error, utcnow() + timedelta(seconds=delay))
            report.failed += 1
            if isinstance(failure, PermanentDeliveryError):
                refused.add(row["channel"])
            log.warning("%s via %s failed (%d tries so far), next try in %.1f s: %s", what, row["channel"], attempts, delay, error)
            continue
        with engine.begin() as conn:
            store.mark_sent(conn, tables, row["id"], attempts, utcnow())
        report.sent += 1
        log.info("%s sent via %s (%d tries)", what, row["channel"], tries)
    if rows:
        log.info(
            "notifications: %d sent, %d failed, %d held (their channel refused login or TLS), %d skipped (claimed by another sender) in %.2f s",
            report.sent, report.failed, report.held, report.skipped, time.perf_counter() - started,
        )
    return report


def deliver_after_run(engine: sa.Engine, tables: Tables, settings: Settings) -> None:
    """`deliver` for the end of a run: an error is logged (the rows stay pending, `status` shows them), never raised."""
    if not settings.notify.channels:
        return
    from core.errors import PipelineError

    try:
        deliver(engine, tables, settings)
    except (PipelineError, sa.exc.SQLAlchemyError) as exc:
        log.error("notifications not sent, they stay pending: %s", mask_secrets(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
