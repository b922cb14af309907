"""The range of timestamps the product handles, and the one check every timestamp entering it passes.

Windows, checkpoints and comparisons use numpy's datetime64[ns], which holds 1677-09-21 ..
2262-04-11 and wraps silently outside it. Every timestamp that enters (command-line options,
source rows, CSV cells) is checked against SUPPORTED_START .. SUPPORTED_END, whole years well
inside that type with room for windows and allowances, and refused with a one-line reason.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from core.errors import DataValidationError

SUPPORTED_START = datetime(1700, 1, 1)
SUPPORTED_END = datetime(2199, 12, 31, 23, 59, 59, 999999)
RANGE_TEXT = f"{SUPPORTED_START:%Y-%m-%d} .. {SUPPORTED_END:%Y-%m-%d}"


def naive_utc(value: datetime) -> datetime:
    """A time-zone aware value converted to naive UTC; a naive value is taken as UTC already."""
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo is not None else value


def check_timestamp(value: datetime, what: str) -> datetime:
    """`value` as naive UTC, or DataValidationError naming `what` when it is outside the supported range."""
    value = naive_utc(value)
    if not SUPPORTED_START <= value <= SUPPORTED_END:
        raise DataValidationError(f"{what} {value.isoformat()} is outside the supported range {RANGE_TEXT}")
    return value


def parse_timestamp(text: str, what: str) -> datetime:
    """An ISO 8601 date/time as naive UTC, checked against the supported range; DataValidationError otherwise."""
    try:
        value = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise DataValidationError(f"{what}: not an ISO date/time: {text!r} (e.g. 2026-01-31 or 2026-01-31T12:00)") from None
    return check_timestamp(value, what)


def in_range(times: pd.Series) -> np.ndarray:
    """Boolean mask of the (naive, any resolution) datetimes inside the supported range; NaT is outside."""
    values = times.to_numpy(dtype="datetime64[us]")
    return (values >= np.datetime64(SUPPORTED_START, "us")) & (values <= np.datetime64(SUPPORTED_END, "us"))
