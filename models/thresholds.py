"""Threshold rules: a per-compressor threshold from the scores of held-out normal windows.

Every rule is fitted on out-of-fold scores of windows the network was not trained on
(models/calibration.py), so its meaning holds on new normal data of the same kind:

- ``false_alarm_rate`` (default): the conformal quantile of the held-out scores. With n scores
  and target rate a, the threshold is the ceil((n + 1)(1 - a))-th smallest score, so a new
  exchangeable normal window exceeds it with probability at most a. That needs
  n >= windows_needed(a); below it the rule falls back to the largest score and says so.
- ``mean_std``: mean + k·std of the held-out scores (the original rule; no stated rate).
- ``alarm_budget``: the lowest threshold whose alert episodes on the held-out series, under the
  model's alarm rule, stay within a budget of alerts per hour.
"""
from __future__ import annotations

import math

import numpy as np

from models.alarms import AlarmRule

_BUDGET_CANDIDATES = 400


def _scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("cannot calibrate a threshold on zero windows")
    return scores


def mean_std_threshold(scores: np.ndarray, k: float = 2.0) -> float:
    """mean + k·std of the scores of normal windows."""
    scores = _scores(scores)
    return float(scores.mean() + k * scores.std())


def windows_needed(rate: float) -> int:
    """Fewest held-out windows for which the conformal quantile at `rate` is not the maximum."""
    return math.ceil((1.0 - rate) / rate)


def false_alarm_rate_threshold(scores: np.ndarray, rate: float) -> float:
    """The conformal (1 - rate) quantile of normal scores.

    With fewer than windows_needed(rate) scores it is the largest score, whose expected
    false-alarm rate is 1 / (n + 1) > rate (models/calibration.py warns about that).
    """
    scores = np.sort(_scores(scores))
    rank = math.ceil((len(scores) + 1) * (1.0 - rate))
    return float(scores[min(rank, len(scores)) - 1])


def alarm_budget_threshold(
    scores: np.ndarray, hours: float, budget_per_hour: float, rule: AlarmRule, breaks: np.ndarray | None = None
) -> float:
    """Lowest threshold whose alert episodes on a held-out normal series stay within the budget.

    Scans candidate thresholds from high to low and stops before the first one that opens more
    than `budget_per_hour * hours` episodes under `rule`, so every threshold above the chosen one
    is within budget too.
    """
    scores = _scores(scores)
    if hours <= 0:
        raise ValueError("cannot calibrate an alarm-budget threshold on an empty slice")
    allowed = budget_per_hour * hours
    chosen = float(scores.max()) * (1 + 1e-6) + 1e-12
    candidates = np.unique(np.quantile(scores, np.linspace(0.5, 1.0, _BUDGET_CANDIDATES)))[::-1]
    for candidate in candidates:
        if rule.count_episodes(scores, candidate, breaks) > allowed:
            break
        chosen = float(candidate)
    return chosen
