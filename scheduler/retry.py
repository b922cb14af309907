"""Retry transient database errors with exponential backoff and jitter."""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

import sqlalchemy as sa

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATE classes a new attempt may get past: connection exception, transaction rollback
# (serialization failure, deadlock), insufficient resources, operator intervention (shutdown,
# pg_terminate_backend), lock not available.
_TRANSIENT_SQLSTATE = ("08", "40", "53", "57P", "55P03")
# MySQL/MariaDB: lock wait timeout, deadlock, server gone away / lost / cannot connect, too many connections.
_TRANSIENT_MYSQL = {1040, 1205, 1213, 2002, 2003, 2006, 2013, 2055}
_TRANSIENT_SQLITE = ("locked", "busy", "disk i/o error", "unable to open database file")


def _sqlstate(orig: BaseException) -> str | None:
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_transient(exc: BaseException) -> bool:
    """Connection-level failures and lock conflicts that a new attempt may get past.

    Errors the database reports about the statement or the login (missing table, bad password,
    unknown database) are permanent even when the driver files them under OperationalError.
    """
    if isinstance(exc, sa.exc.TimeoutError):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return False
    orig = exc.orig
    state = _sqlstate(orig)
    if state:
        return state.startswith(_TRANSIENT_SQLSTATE)
    module = type(orig).__module__
    if module.startswith("sqlite3"):
        return any(word in str(orig).lower() for word in _TRANSIENT_SQLITE)
    if module.startswith(("pymysql", "MySQLdb")):
        code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
        return code in _TRANSIENT_MYSQL
    return True  # no server verdict: the connection itself failed


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
