"""Tables of the alert life cycle: episodes, maintenance windows and the notification outbox.

- alert_episodes: one row per alert episode (models/alarms.py), derived in the batch transaction
  from the windows written (pipeline/episodes.py); unique per (compressor, model version, start),
  so a replay or an overlapping backfill updates it instead of adding a second one. start_time,
  end_time (NULL while the episode is open), peak_* and top_features are derived; state,
  acknowledged_*, closed_* and note are set by people (`alerts ack`, `alerts close`) and never
  touched by a batch.
- maintenance_windows: per compressor, [starts_at, ends_at] in which windows open no episode.
- alert_notifications: the outbox; one row per (idempotency key, channel), written in the same
  transaction as the episode it announces, delivered after commit (scheduler/notifier.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

EPISODES_TABLE = "alert_episodes"
MAINTENANCE_TABLE = "maintenance_windows"
NOTIFICATIONS_TABLE = "alert_notifications"
EPISODE_STATES = ("open", "acknowledged", "closed")
NOTIFICATION_KINDS = ("opened", "ended")


@dataclass(frozen=True)
class ColumnTypes:
    """The portable column types of db/schema.py (passed in: that module builds these tables)."""

    Id: sa.types.TypeEngine
    Timestamp: sa.types.TypeEngine
    Score: sa.types.TypeEngine
    Text: sa.types.TypeEngine


@dataclass(frozen=True)
class AlertTables:
    episodes: sa.Table
    maintenance: sa.Table
    notifications: sa.Table


def build_alert_tables(metadata: sa.MetaData, types: ColumnTypes) -> AlertTables:
    """The three tables on `metadata`."""
    key = sa.BigInteger().with_variant(sa.Integer, "sqlite")
    episodes = sa.Table(
        EPISODES_TABLE,
        metadata,
        sa.Column("id", key, primary_key=True, autoincrement=True),
        sa.Column("compressor_id", types.Id, nullable=False),
        sa.Column("model_version", sa.Unicode(40), nullable=False),
        sa.Column("start_time", types.Timestamp, nullable=False),
        sa.Column("end_time", types.Timestamp),
        sa.Column("peak_score", types.Score, nullable=False),
        sa.Column("peak_at", types.Timestamp, nullable=False),
        sa.Column("threshold", types.Score, nullable=False),
        sa.Column("top_features", sa.Unicode(200)),
        sa.Column("state", sa.Unicode(16), nullable=False),
        sa.Column("acknowledged_by", sa.Unicode(100)),
        sa.Column("acknowledged_at", types.Timestamp),
        sa.Column("closed_by", sa.Unicode(100)),
        sa.Column("closed_at", types.Timestamp),
        sa.Column("note", types.Text),
        sa.Column("created_at", types.Timestamp, nullable=False),
        sa.Column("updated_at", types.Timestamp, nullable=False),
        sa.UniqueConstraint("compressor_id", "model_version", "start_time", name="uq_episode_start"),
        sa.Index("ix_episodes_state", "state", "start_time"),
    )
    maintenance = sa.Table(
        MAINTENANCE_TABLE,
        metadata,
        sa.Column("id", key, primary_key=True, autoincrement=True),
        sa.Column("compressor_id", types.Id, nullable=False),
        sa.Column("starts_at", types.Timestamp, nullable=False),
        sa.Column("ends_at", types.Timestamp, nullable=False),
        sa.Column("reason", types.Text, nullable=False),
        sa.Column("created_at", types.Timestamp, nullable=False),
        sa.Index("ix_maintenance_compressor_time", "compressor_id", "starts_at"),
    )
    notifications = sa.Table(
        NOTIFICATIONS_TABLE,
        metadata,
        sa.Column("id", key, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.Unicode(64), nullable=False),
        sa.Column("channel", sa.Unicode(16), nullable=False),
        sa.Column("kind", sa.Unicode(16), nullable=False),
        sa.Column("compressor_id", types.Id, nullable=False),
        sa.Column("episode_start", types.Timestamp, nullable=False),
        sa.Column("model_version", sa.Unicode(40), nullable=False),
        sa.Column("payload", sa.Unicode(4000), nullable=False),
        sa.Column("status", sa.Unicode(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", types.Timestamp, nullable=False),
        sa.Column("claimed_until", types.Timestamp),
        sa.Column("last_error", types.Text),
        sa.Column("created_at", types.Timestamp, nullable=False),
        sa.Column("sent_at", types.Timestamp),
        sa.UniqueConstraint("idempotency_key", "channel", name="uq_notification_key"),
        sa.Index("ix_notifications_status", "status", "next_attempt_at"),
    )
    return AlertTables(episodes, maintenance, notifications)
