"""Retry transient database errors with exponential backoff and jitter."""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

import sqlalchemy as sa

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Connection-level failures that a new attempt may get past."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError))


def with_retries(action: Callable[[], T], attempts: int, base_delay_s: float, what: str, sleep=time.sleep) -> T:
    """Run `action`; on a transient error wait base·2^k (±50 % jitter) and try again."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not is_transient(exc) or attempt == attempts:
                raise
            delay = base_delay_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            log.warning("%s: transient database error (attempt %d/%d), retrying in %.1f s: %s", what, attempt, attempts, delay, str(exc).splitlines()[0])
            sleep(delay)
    raise AssertionError("unreachable")
