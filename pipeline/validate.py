"""Row validation: bad rows are counted by reason and set aside, never crash the batch.

Documented rules:
- timestamps that are missing or cannot be parsed are rejected (`bad_timestamp`), and so are those
  outside the supported range of core/timerange.py (`timestamp_out_of_range`);
- values that are not numbers (`non_numeric`), are infinite (`infinite`), or lie outside the
  signal's physical range or the magnitude cap (`out_of_range`, see `value_limits`) become missing;
- rows with missing values (`missing_value`) are dropped under the `skip` rule (so no window
  contains them: the hole breaks the window like a gap), or filled from the previous row under
  the `impute` rule (at most `window` rows in a row; longer holes are dropped);
- duplicate timestamps (`duplicate_timestamp`) are merged into one row: the mean of each signal
  (order-independent, so a replay gives the same result);
- rows are sorted by time, so out-of-order arrival does not matter.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.settings import DataSettings
from core.timerange import in_range


@dataclass
class CleanRows:
    """Validated rows of one compressor, in time order, with the reasons rows were set aside."""

    times: np.ndarray  # datetime64[ns]
    values: np.ndarray  # (rows, features) float32
    rejected: Counter = field(default_factory=Counter)

    @property
    def rows_rejected(self) -> int:
        """Rows that did not reach windowing (values made missing are counted once, as missing)."""
        return sum(self.rejected[r] for r in ("bad_timestamp", "timestamp_out_of_range", "duplicate_timestamp", "missing_value"))


Limits = tuple[np.ndarray, np.ndarray]


def value_limits(data: DataSettings, features: tuple[str, ...]) -> Limits:
    """(low, high) per feature, both included: its configured physical range, else -max_abs_value .. max_abs_value."""
    ranges = {signal: (low, high) for signal, low, high in data.value_ranges}
    low = np.array([ranges.get(f, (-data.max_abs_value, 0.0))[0] for f in features], dtype=np.float64)
    high = np.array([ranges.get(f, (0.0, data.max_abs_value))[1] for f in features], dtype=np.float64)
    return low, high


def _default_limits(features: tuple[str, ...]) -> Limits:
    return value_limits(DataSettings(), features)


def validate_rows(
    frame: pd.DataFrame, timestamp_column: str, features: tuple[str, ...], missing_rule: str, window: int, limits: Limits | None = None
) -> CleanRows:
    """Apply the rules above to a raw frame (timestamp + feature columns); `limits` defaults to the magnitude cap."""
    rejected: Counter = Counter()
    missing_columns = [c for c in (timestamp_column, *features) if c not in frame.columns]
    if missing_columns:
        raise KeyError(f"missing column(s): {', '.join(missing_columns)}")
    times = pd.to_datetime(frame[timestamp_column], errors="coerce", utc=False)
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    unparsed = times.isna().to_numpy()
    bad_time = unparsed | ~in_range(times)
    rejected["bad_timestamp"] += int(unparsed.sum())
    rejected["timestamp_out_of_range"] += int((bad_time & ~unparsed).sum())
    data = frame.loc[~bad_time, list(features)]
    numeric = data.apply(pd.to_numeric, errors="coerce")
    rejected["non_numeric"] += int((numeric.isna() & data.notna()).any(axis=1).sum())
    values = numeric.to_numpy(dtype=np.float64, copy=True)
    infinite = np.isinf(values)
    rejected["infinite"] += int(infinite.any(axis=1).sum())
    values[infinite] = np.nan
    low, high = limits if limits is not None else _default_limits(features)
    with np.errstate(invalid="ignore"):
        outside = ~np.isnan(values) & ((values < low) | (values > high))
    rejected["out_of_range"] += int(outside.any(axis=1).sum())
    values[outside] = np.nan
    table = pd.DataFrame(values, columns=list(features))
    table.insert(0, "__time", times[~bad_time].to_numpy(dtype="datetime64[ns]"))
    duplicated = table["__time"].duplicated(keep=False)
    if duplicated.any():
        rejected["duplicate_timestamp"] += int(duplicated.sum() - table.loc[duplicated, "__time"].nunique())
        table = table.groupby("__time", sort=False, as_index=False).mean()
    table = table.sort_values("__time", kind="stable").reset_index(drop=True)
    has_missing = table[list(features)].isna().any(axis=1)
    if has_missing.any():
        if missing_rule == "impute":
            filled = table[list(features)].ffill(limit=window)
            still_missing = filled.isna().any(axis=1)
            rejected["imputed"] += int((has_missing & ~still_missing).sum())
            table[list(features)] = filled
            has_missing = still_missing
        rejected["missing_value"] += int(has_missing.sum())
        table = table.loc[~has_missing]
    return CleanRows(
        times=table["__time"].to_numpy(dtype="datetime64[ns]"),
        values=table[list(features)].to_numpy(dtype=np.float32),
        rejected=Counter({k: v for k, v in rejected.items() if v}),
    )
