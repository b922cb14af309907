"""The clock: naive UTC, the form every timestamp in the database takes."""
from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Naive UTC now (all timestamps in the database are naive UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
