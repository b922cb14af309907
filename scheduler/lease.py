"""Per-compressor leases in the checkpoint table, so two schedulers never process one compressor at once.

A lease is taken with a single conditional UPDATE (atomic on every database) and expires after
`lease_seconds`, so a crashed holder's compressors are picked up again. Every batch transaction
starts by confirming the lease with another conditional UPDATE (`confirm`): that row lock (the
database write lock on SQLite) is held until the batch commits, so a holder whose lease ran out
mid-batch and was taken over cannot commit a second copy of the work.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import timedelta

import sqlalchemy as sa

from core.errors import PipelineError
from db.results import utcnow
from db.schema import Tables


class LeaseLost(PipelineError):
    """Another scheduler holds the compressor's lease; the batch was rolled back."""


def make_owner_id() -> str:
    """host:pid:random, unique per scheduler process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:100]


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
