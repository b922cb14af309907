"""Fault injection at named points of a batch, driven by one environment variable (for failure tests).

    COMPRESSOR_AD_CRASH_AT="PHASE:N[:ACTION][,PHASE:N[:ACTION]...]"

PHASE is one of the points below, N the N-th time this process reaches it (1-based), ACTION:
    kill        the process sends itself SIGKILL (default): no cleanup, no rollback, no lease release
    disconnect  the batch's database connection is cut: on PostgreSQL its backend is terminated from a
                second connection (pg_terminate_backend), elsewhere a connection-loss error is raised
    error       a permanent database error is raised

Points: read (rows read), infer (windows scored, nothing written), write (between the detailed and the
simple result rows), commit (everything written, just before the transaction commits), release
(committed, lease not yet released), notify (the run's batches committed, before the first
notification is claimed and sent). Unset, `hit` returns at once.
"""
from __future__ import annotations

import logging
import os
import signal
from collections import Counter

import sqlalchemy as sa

log = logging.getLogger(__name__)

ENV_VAR = "COMPRESSOR_AD_CRASH_AT"
PHASES = ("read", "infer", "write", "commit", "release", "notify")
ACTIONS = ("kill", "disconnect", "error")


class InjectedFault(Exception):
    """The original error carried by an injected database exception."""


def parse(text: str) -> dict[str, dict[int, str]]:
    """{phase: {n: action}} from the variable's value; ValueError naming a bad entry."""
    plan: dict[str, dict[int, str]] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        fields = entry.split(":")
        if len(fields) not in (2, 3) or fields[0] not in PHASES or not fields[1].isdigit() or int(fields[1]) < 1:
            raise ValueError(f"{ENV_VAR}: bad entry {entry!r} (expected PHASE:N[:ACTION], PHASE in {', '.join(PHASES)})")
        action = fields[2] if len(fields) == 3 else "kill"
        if action not in ACTIONS:
            raise ValueError(f"{ENV_VAR}: unknown action {action!r} (one of {', '.join(ACTIONS)})")
        plan.setdefault(fields[0], {})[int(fields[1])] = action
    return plan


_plan = parse(os.environ.get(ENV_VAR, ""))
_hits: Counter = Counter()


def hit(phase: str, conn: sa.Connection | None = None) -> None:
    """Count one pass through `phase` and fire the fault planned for this pass, if any."""
    if not _plan:
        return
    _hits[phase] += 1
    action = _plan.get(phase, {}).get(_hits[phase])
    if action:
        log.warning("injected fault: %s at %s #%d", action, phase, _hits[phase])
        _fire(action, phase, conn)


def _fire(action: str, phase: str, conn: sa.Connection | None) -> None:
    if action == "kill":
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
        os._exit(137)
    if action == "error":
        raise sa.exc.DatabaseError("injected", None, InjectedFault(f"permanent error injected at {phase}"))
    if conn is not None and conn.dialect.name == "postgresql":
        backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with conn.engine.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        return
    raise sa.exc.OperationalError(
        "injected", None, InjectedFault(f"connection lost (injected at {phase})"), connection_invalidated=True
    )
