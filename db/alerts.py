"""Reading and writing the alert tables (db/alert_schema.py), always through the caller's connection.

Batches write episodes and outbox rows inside their own transaction; the `alerts` and
`maintenance` commands and the notification sender use short transactions of their own.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from core.errors import PipelineError
from db.alert_schema import EPISODE_STATES
from db.schema import Tables

PENDING, SENT = "pending", "sent"


# ------------------------------------------------------------------ windows behind episodes
def last_trigger_before(conn: sa.Connection, tables: Tables, cid: str, version: str, before: datetime) -> datetime | None:
    """window_end of the latest stored window before `before` where an episode opened."""
    d = tables.detailed
    return conn.execute(
        sa.select(sa.func.max(d.c.window_end)).where(d.c.compressor_id == cid, d.c.model_version == version, d.c.triggered.is_(True), d.c.window_end < before)
    ).scalar_one()


def stored_end_after(conn: sa.Connection, tables: Tables, cid: str, version: str, after: datetime) -> tuple[bool, datetime | None]:
    """(ended, last in_alert window) of an episode open at `after`, from the stored windows after it."""
    d = tables.detailed
    mine = (d.c.compressor_id == cid, d.c.model_version == version, d.c.window_end > after)
    quiet = conn.execute(sa.select(sa.func.min(d.c.window_end)).where(*mine, sa.or_(d.c.in_alert.is_(None), d.c.in_alert.is_(False)))).scalar_one()
    if quiet is None:
        return False, None
    return True, conn.execute(sa.select(sa.func.max(d.c.window_end)).where(*mine, d.c.window_end < quiet)).scalar_one()


def peak_window(conn: sa.Connection, tables: Tables, cid: str, version: str, start: datetime, end: datetime | None):
    """(score, window_end, top_features, threshold) of the highest-scoring stored window in [start, end]."""
    d = tables.detailed
    where = [d.c.compressor_id == cid, d.c.model_version == version, d.c.window_end >= start]
    if end is not None:
        where.append(d.c.window_end <= end)
    return conn.execute(
        sa.select(d.c.score, d.c.window_end, d.c.top_features, d.c.threshold).where(*where).order_by(d.c.score.desc(), d.c.window_end).limit(1)
    ).first()


# ------------------------------------------------------------------ episodes
def episodes_starting(conn: sa.Connection, tables: Tables, cid: str, version: str, starts: list[datetime], lo: datetime, hi: datetime) -> dict:
    """Stored episodes of one compressor and version starting in [lo, hi] or at one of `starts`, by start."""
    e = tables.alerts.episodes
    where = sa.and_(e.c.start_time >= lo, e.c.start_time <= hi)
    if starts:
        where = sa.or_(where, e.c.start_time.in_(starts))
    rows = conn.execute(sa.select(e).where(e.c.compressor_id == cid, e.c.model_version == version, where)).mappings()
    return {row["start_time"]: dict(row) for row in rows}


def list_episodes(conn: sa.Connection, tables: Tables, state: str | None = None, cid: str | None = None, limit: int = 1000) -> list[dict]:
    e = tables.alerts.episodes
    query = sa.select(e).order_by(e.c.start_time.desc(), e.c.id.desc()).limit(limit)
    if state:
        query = query.where(e.c.state == state)
    if cid:
        query = query.where(e.c.compressor_id == cid)
    return [dict(row) for row in conn.execute(query).mappings()]


def set_state(conn: sa.Connection, tables: Tables, episode_id: int, state: str, by: str | None, note: str | None, now: datetime) -> dict:
    """acknowledged (by, note) or closed; PipelineError for an unknown id or a closed episode."""
    if state not in EPISODE_STATES[1:]:
        raise ValueError(f"unknown episode state {state!r}")
    e = tables.alerts.episodes
    row = conn.execute(sa.select(e).where(e.c.id == episode_id)).mappings().first()
    if row is None:
        raise PipelineError(f"no alert episode with id {episode_id}")
    if row["state"] == "closed":
        raise PipelineError(f"alert episode {episode_id} is already closed")
    values: dict = {"state": state, "updated_at": now}
    if state == "acknowledged":
        values.update(acknowledged_by=by, acknowledged_at=now)
    else:
        values.update(closed_by=by, closed_at=now)
    if note is not None:
        values["note"] = note
    conn.execute(sa.update(e).where(e.c.id == episode_id).values(**values))
    return {**dict(row), **values}


def open_episode_counts(conn: sa.Connection, tables: Tables) -> dict[str, int]:
    """compressor -> episodes not closed by a person (open or acknowledged)."""
    e = tables.alerts.episodes
    rows = conn.execute(sa.select(e.c.compressor_id, sa.func.count()).where(e.c.state != "closed").group_by(e.c.compressor_id))
    return {cid: int(n) for cid, n in rows}


# ------------------------------------------------------------------ maintenance windows
def add_maintenance(conn: sa.Connection, tables: Tables, cid: str, start: datetime, end: datetime, reason: str, now: datetime) -> int:
    if end <= start:
        raise PipelineError(f"maintenance end {end.isoformat()} is not after its start {start.isoformat()}")
    if not reason.strip():
        raise PipelineError("--reason must not be empty")
    m = tables.alerts.maintenance
    result = conn.execute(sa.insert(m).values(compressor_id=cid, starts_at=start, ends_at=end, reason=reason, created_at=now))
    return int(result.inserted_primary_key[0])


def list_maintenance(conn: sa.Connection, tables: Tables) -> list[dict]:
    m = tables.alerts.maintenance
    return [dict(r) for r in conn.execute(sa.select(m).order_by(m.c.compressor_id, m.c.starts_at, m.c.id)).mappings()]


def remove_maintenance(conn: sa.Connection, tables: Tables, window_id: int) -> None:
    m = tables.alerts.maintenance
    if conn.execute(sa.delete(m).where(m.c.id == window_id)).rowcount == 0:
        raise PipelineError(f"no maintenance window with id {window_id}")


# ------------------------------------------------------------------ outbox
def enqueue(conn: sa.Connection, tables: Tables, key: str, channel: str, kind: str, cid: str, version: str, started: datetime, payload: str, now: datetime) -> bool:
    """One outbox row unless (key, channel) is already there (a replay writes nothing new); True when written."""
    n = tables.alerts.notifications
    if conn.execute(sa.select(n.c.id).where(n.c.idempotency_key == key, n.c.channel == channel)).first():
        return False
    conn.execute(
        sa.insert(n).values(
            idempotency_key=key, channel=channel, kind=kind, compressor_id=cid, model_version=version, episode_start=started,
            payload=payload, status=PENDING, attempts=0, next_attempt_at=now, created_at=now,
        )
    )
    return True


def drop_pending(conn: sa.Connection, tables: Tables, cid: str, version: str, started: datetime) -> int:
    """Unsent notifications of an episode a rewrite removed."""
    n = tables.alerts.notifications
    where = (n.c.compressor_id == cid, n.c.model_version == version, n.c.episode_start == started, n.c.status == PENDING)
    return conn.execute(sa.delete(n).where(*where)).rowcount


def due(conn: sa.Connection, tables: Tables, now: datetime, limit: int = 100) -> list[dict]:
    """Pending rows whose next attempt is due and that no live sender has claimed, oldest first."""
    n = tables.alerts.notifications
    query = (
        sa.select(n)
        .where(n.c.status == PENDING, n.c.next_attempt_at <= now, sa.or_(n.c.claimed_until.is_(None), n.c.claimed_until < now))
        .order_by(n.c.id)
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def claim(conn: sa.Connection, tables: Tables, row_id: int, now: datetime, hold_s: float) -> bool:
    """Take one pending row for `hold_s` seconds (a second sender skips it); False when another took it first."""
    n = tables.alerts.notifications
    claimed = conn.execute(
        sa.update(n)
        .where(n.c.id == row_id, n.c.status == PENDING, sa.or_(n.c.claimed_until.is_(None), n.c.claimed_until < now))
        .values(claimed_until=now + timedelta(seconds=hold_s))
    )
    return claimed.rowcount == 1


def mark_sent(conn: sa.Connection, tables: Tables, row_id: int, attempts: int, now: datetime) -> None:
    n = tables.alerts.notifications
    conn.execute(sa.update(n).where(n.c.id == row_id).values(status=SENT, sent_at=now, attempts=attempts, claimed_until=None, last_error=None))


def mark_failed(conn: sa.Connection, tables: Tables, row_id: int, attempts: int, error: str, retry_at: datetime) -> None:
    n = tables.alerts.notifications
    conn.execute(sa.update(n).where(n.c.id == row_id).values(attempts=attempts, last_error=error[:1000], next_attempt_at=retry_at, claimed_until=None))


def pending_counts(conn: sa.Connection, tables: Tables) -> dict[str, dict]:
    """compressor -> {"pending", "failing", "last_error"}: the unsent notifications (for `status` and metrics)."""
    n = tables.alerts.notifications
    rows = conn.execute(
        sa.select(n.c.compressor_id, n.c.attempts, n.c.last_error).where(n.c.status == PENDING).order_by(n.c.id)
    )
    out: dict[str, dict] = {}
    for cid, attempts, error in rows:
        entry = out.setdefault(cid, {"pending": 0, "failing": 0, "last_error": None})
        entry["pending"] += 1
        if attempts:
            entry["failing"] += 1
            entry["last_error"] = error
    return out
