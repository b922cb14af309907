"""Per-compressor leases in the checkpoint table, so two schedulers never process one compressor at once.

A lease is taken with a single conditional UPDATE (atomic on every database) and expires after
`lease_seconds`, so a crashed holder's compressors are picked up again.
"""
from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

import sqlalchemy as sa

from db.results import utcnow
from db.schema import Tables


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


def release(engine: sa.Engine, tables: Tables, cid: str, owner: str) -> None:
    """Give the lease back (only if still ours)."""
    table = tables.checkpoint
    with engine.begin() as conn:
        conn.execute(
            sa.update(table)
            .where(table.c.compressor_id == cid, table.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )
