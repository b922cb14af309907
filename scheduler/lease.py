"""Per-compressor leases in the checkpoint table, so two schedulers never process one compressor at once.

A lease is taken with a single conditional UPDATE (atomic on every database) and expires after
`lease_seconds`, so a crashed holder's compressors are picked up again. The owner id records the
holder's host and process id (`host:pid:random`): a holder on this host whose process is gone
(SIGKILL, OOM killer) is taken over at once, with a compare-and-swap on its owner id, instead of
after the expiry. A live pid, or a holder on another host, is waited for. Every batch transaction
starts by confirming the lease with another conditional UPDATE (`confirm`): that row lock (the
database write lock on SQLite) is held until the batch commits, so a holder whose lease ran out
mid-batch and was taken over cannot commit a second copy of the work.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import timedelta

import sqlalchemy as sa

from core.clock import utcnow
from core.errors import PipelineError
from db.schema import Tables

log = logging.getLogger(__name__)


class LeaseLost(PipelineError):
    """Another scheduler holds the compressor's lease; the batch was rolled back."""


HOST_CHARS = 80  # owner ids fit lease_owner (100 characters) with the pid and the random part whole


def _host() -> str:
    return socket.gethostname()[:HOST_CHARS]


def make_owner_id() -> str:
    """host:pid:random, unique per scheduler process."""
    return f"{_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_gone(owner: str | None) -> bool:
    """True when `owner` names a process of this host that no longer exists."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != _host() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: the process exists under another user
        return False
    return False


def _ensure_row(engine: sa.Engine, tables: Tables, cid: str) -> None:
    table = tables.checkpoint
    with engine.begin() as conn:
        if conn.execute(sa.select(table.c.compressor_id).where(table.c.compressor_id == cid)).first():
            return
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(table).values(compressor_id=cid, consecutive_count=0, updated_at=utcnow()))
    except sa.exc.IntegrityError:
        pass  # another scheduler created it first


def acquire(engine: sa.Engine, tables: Tables, cid: str, owner: str, lease_seconds: float) -> bool:
    """Take (or renew) the lease of one compressor; False when someone else holds a live lease."""
    _ensure_row(engine, tables, cid)
    table = tables.checkpoint
    now = utcnow()
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(table)
            .where(
                table.c.compressor_id == cid,
                sa.or_(table.c.lease_owner.is_(None), table.c.lease_owner == owner, table.c.lease_expires_at < now),
            )
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
        )
        if result.rowcount == 1:
            return True
    current, _ = holder(engine, tables, cid)
    return holder_gone(current) and _take_over(engine, tables, cid, current, owner, lease_seconds)


def _take_over(engine: sa.Engine, tables: Tables, cid: str, dead: str, owner: str, lease_seconds: float) -> bool:
    """Replace a dead holder's lease by ours, only if that holder still has it."""
    table = tables.checkpoint
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(table)
            .where(table.c.compressor_id == cid, table.c.lease_owner == dead)
            .values(lease_owner=owner, lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        )
    if result.rowcount == 1:
        log.warning("compressor %s: took over the lease of %s (its process is gone from this host)", cid, dead)
    return result.rowcount == 1


def wait_acquire(engine: sa.Engine, tables: Tables, cid: str, owner: str, lease_seconds: float, poll_s: float = 0.5) -> bool:
    """`acquire`, polling for up to one lease period (+ poll) while another scheduler holds it."""
    deadline = time.monotonic() + lease_seconds + poll_s
    while not acquire(engine, tables, cid, owner, lease_seconds):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def holder(engine: sa.Engine, tables: Tables, cid: str) -> tuple[str | None, object]:
    """(owner, expiry) of a compressor's lease, for messages."""
    table = tables.checkpoint
    with engine.connect() as conn:
        row = conn.execute(sa.select(table.c.lease_owner, table.c.lease_expires_at).where(table.c.compressor_id == cid)).first()
    return (row[0], row[1]) if row else (None, None)


def confirm(conn: sa.Connection, tables: Tables, cid: str, owner: str, lease_seconds: float) -> None:
    """First statement of a batch transaction: extend our lease and lock the row, or raise LeaseLost."""
    table = tables.checkpoint
    result = conn.execute(
        sa.update(table)
        .where(table.c.compressor_id == cid, table.c.lease_owner == owner)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
    )
    if result.rowcount != 1:
        raise LeaseLost(f"compressor {cid}: the lease was taken over by another scheduler; batch rolled back")


def release(engine: sa.Engine, tables: Tables, cid: str, owner: str) -> None:
    """Give the lease back (only if still ours)."""
    table = tables.checkpoint
    with engine.begin() as conn:
        conn.execute(
            sa.update(table)
            .where(table.c.compressor_id == cid, table.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )
