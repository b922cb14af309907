"""Per-compressor threshold calibration on normal-period scores."""
from __future__ import annotations

import numpy as np

from models.alerting import count_alert_events

_BUDGET_CANDIDATES = 400


def mean_std_threshold(scores: np.ndarray, k: float = 2.0) -> float:
    """mean + k·std of the scores of normal windows."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("cannot calibrate a threshold on zero windows")
    return float(scores.mean() + k * scores.std())


def alarm_budget_threshold(
    scores: np.ndarray,
    hours: float,
    budget_per_hour: float,
    trigger: int,
    breaks: np.ndarray | None = None,
) -> float:
    """Lowest threshold whose alert events on a held-out normal slice stay within the budget.

    Scans candidate thresholds from high to low and stops before the first one that raises
    more than `budget_per_hour * hours` alert events (after the consecutive trigger), so every
    threshold above the chosen one is within budget too.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0 or hours <= 0:
        raise ValueError("cannot calibrate an alarm-budget threshold on an empty slice")
    allowed = budget_per_hour * hours
    top = float(scores.max()) * (1 + 1e-6) + 1e-12
    candidates = np.unique(np.quantile(scores, np.linspace(0.5, 1.0, _BUDGET_CANDIDATES)))[::-1]
    chosen = top
    for candidate in candidates:
        if count_alert_events(scores, candidate, trigger, breaks) > allowed:
            break
        chosen = float(candidate)
    return chosen
