"""Alert episodes from the windows a batch wrote, inside the batch's transaction.

An episode is a run of `in_alert` windows of one compressor and model version; it is keyed by
its start (the window where it opened, `triggered`), so it is derived, not counted: a replay,
a late-row rescore or an overlapping backfill of the same rows derives the same episodes and
updates them in place (people's acknowledgements and notes are kept). After a batch rewrote the
windows ending in [lo, hi]:
- every in_alert run among them is an episode: one that opened before lo continues the episode
  of the latest stored trigger; one still open at hi ends where the stored windows after hi go
  quiet (a backfill inside history), else it stays open (end_time NULL);
- its peak score, peak window and top signals are those of the highest-scoring stored window;
- stored episodes starting in [lo, hi] that the new windows no longer show are deleted, with
  their unsent notifications;
- each new episode (and, with `[notify] on_end`, each one that ended) writes one outbox row per
  configured channel, keyed by a hash of (compressor, version, start, kind): never twice.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.settings import Settings
from db import alerts as store
from db.schema import Tables


@dataclass
class EpisodeCounts:
    opened: int = 0
    ended: int = 0
    removed: int = 0
    notifications: int = 0


def idempotency_key(cid: str, version: str, started: datetime, kind: str) -> str:
    """The same for every replay of the same episode and kind; sent with the notification."""
    text = json.dumps([cid, version, started.isoformat(), kind])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _py(value) -> datetime:
    return pd.Timestamp(value).to_pydatetime()


def _runs(in_alert: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    edges = np.diff(np.concatenate([[0], in_alert.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def _derive(conn: sa.Connection, tables: Tables, cid: str, version: str, scored: pd.DataFrame, hi: datetime) -> list[tuple[datetime, datetime | None]]:
    """(start, end or None while open) of every in_alert run in the written windows."""
    ends = scored["window_end"].to_numpy(dtype="datetime64[ns]")
    in_alert = scored["in_alert"].to_numpy(dtype=bool)
    triggered = scored["triggered"].to_numpy(dtype=bool)
    out = []
    for first, last in _runs(in_alert):
        start = _py(ends[first])
        if not triggered[first]:  # the batch starts inside an episode that opened earlier
            start = store.last_trigger_before(conn, tables, cid, version, start) or start
        end: datetime | None = _py(ends[last])
        if last == len(ends) - 1:
            ended, stored_last = store.stored_end_after(conn, tables, cid, version, hi)
            end = (stored_last or end) if ended else None
        out.append((start, end))
    return out


def _payload(kind: str, key: str, cid: str, version: str, episode: dict, peak) -> str:
    return json.dumps(
        {
            "idempotency_key": key,
            "event": f"alert_episode_{kind}",
            "compressor_id": cid,
            "model_version": version,
            "start_time": episode["start_time"].isoformat(),
            "end_time": episode["end_time"].isoformat() if episode["end_time"] else None,
            "peak_score": float(peak.score),
            "peak_at": peak.window_end.isoformat(),
            "threshold": float(peak.threshold),
            "top_signals": peak.top_features,
        },
        sort_keys=True,
    )


def rewrite_episodes(
    conn: sa.Connection, tables: Tables, settings: Settings, cid: str, version: str, scored: pd.DataFrame, lo: datetime, hi: datetime, notify: bool, now: datetime
) -> EpisodeCounts:
    """Bring alert_episodes (and the outbox) in line with the windows just written in [lo, hi]."""
    counts = EpisodeCounts()
    derived = _derive(conn, tables, cid, version, scored, hi) if len(scored) else []
    stored = store.episodes_starting(conn, tables, cid, version, [s for s, _ in derived], lo, hi)
    e = tables.alerts.episodes
    channels = settings.notify.channels if notify else ()
    for start, end in derived:
        peak = store.peak_window(conn, tables, cid, version, start, end)
        values = {"end_time": end, "peak_score": float(peak.score), "peak_at": peak.window_end, "threshold": float(peak.threshold), "top_features": peak.top_features, "updated_at": now}
        before = stored.pop(start, None)
        if before is None:
            conn.execute(sa.insert(e).values(compressor_id=cid, model_version=version, start_time=start, state="open", created_at=now, **values))
            counts.opened += start >= lo
        else:
            conn.execute(sa.update(e).where(e.c.id == before["id"]).values(**values))
        newly_ended = end is not None and (before is None or before["end_time"] is None)
        counts.ended += newly_ended
        kinds = (["opened"] if before is None and start >= lo else []) + (["ended"] if newly_ended and settings.notify.on_end else [])
        for kind in kinds:
            key = idempotency_key(cid, version, start, kind)
            payload = _payload(kind, key, cid, version, {"start_time": start, "end_time": end}, peak)
            counts.notifications += sum(store.enqueue(conn, tables, key, ch, kind, cid, version, start, payload, now) for ch in channels)
    for start, row in stored.items():
        if lo <= start <= hi:
            conn.execute(sa.delete(e).where(e.c.id == row["id"]))
            store.drop_pending(conn, tables, cid, version, start)
            counts.removed += 1
    return counts
