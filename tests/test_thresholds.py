"""Threshold rules: mean + k·std, the conformal false-alarm-rate quantile, and the alarm-budget rule
checked by brute force."""
import math

import numpy as np
import pytest

from models.alarms import AlarmRule
from models.thresholds import alarm_budget_threshold, false_alarm_rate_threshold, mean_std_threshold, windows_needed


def count_alert_events(scores, threshold, trigger, breaks=None) -> int:
    return AlarmRule("consecutive", n=trigger, quiet_windows=0).count_episodes(scores, threshold, breaks)


def test_false_alarm_rate_threshold_is_the_conformal_order_statistic():
    scores = np.arange(1, 200, dtype=float)[::-1]  # 199 distinct scores, shuffled order
    threshold = false_alarm_rate_threshold(scores, 0.01)
    rank = math.ceil(200 * 0.99)  # ceil((n + 1)(1 - a)) = 198
    assert threshold == 198.0 == sorted(scores)[rank - 1]
    assert false_alarm_rate_threshold(scores[:50], 0.01) == scores[:50].max()  # too few: the largest
    assert windows_needed(0.01) == 99
    assert false_alarm_rate_threshold(np.arange(99.0), 0.01) == 98.0  # rank 99 of 99
    assert false_alarm_rate_threshold(np.arange(200.0), 0.01) == 198.0  # rank ceil(201 x 0.99) = 199


def test_false_alarm_rate_holds_on_new_exchangeable_scores():
    """Calibrated on 500 normal scores, the rate on fresh draws of the same law is close to the target."""
    rng = np.random.default_rng(3)
    rates = []
    for _ in range(200):
        threshold = false_alarm_rate_threshold(rng.gamma(2.0, 1.0, 500), 0.02)
        rates.append(np.mean(rng.gamma(2.0, 1.0, 5000) > threshold))
    assert np.mean(rates) <= 0.02 + 0.003  # conformal: at most the target in expectation
    assert np.mean(rates) >= 0.015


def test_mean_std_threshold():
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 1.5, 1000)
    assert mean_std_threshold(scores, 2.0) == pytest.approx(scores.mean() + 2.0 * scores.std())
    assert mean_std_threshold(scores, 0.0) == pytest.approx(scores.mean())
    assert mean_std_threshold([1.0, 1.0, 1.0], 3.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="zero windows"):
        mean_std_threshold(np.array([]))


def test_alarm_budget_rejects_an_empty_slice():
    with pytest.raises(ValueError, match="empty slice"):
        alarm_budget_threshold(np.ones(10), 0.0, 0.1, AlarmRule("consecutive", 3))
    with pytest.raises(ValueError, match="zero windows"):
        alarm_budget_threshold(np.array([]), 1.0, 0.1, AlarmRule("consecutive", 3))


def test_alarm_budget_on_a_constructed_series():
    scores = np.full(100, 1.0)
    scores[10:15] = 5.0  # one run of 5 windows at 5
    scores[40:44] = 3.0  # one run of 4 windows at 3
    scores[70:72] = 4.0  # a run of 2: never alerts with a trigger of 3
    one_event = alarm_budget_threshold(scores, hours=10.0, budget_per_hour=0.1, rule=AlarmRule("consecutive", 3, quiet_windows=0))
    assert count_alert_events(scores, one_event, 3) == 1
    assert 3.0 <= one_event < 5.0  # the run at 3 must stay quiet
    two_events = alarm_budget_threshold(scores, hours=10.0, budget_per_hour=0.2, rule=AlarmRule("consecutive", 3, quiet_windows=0))
    assert count_alert_events(scores, two_events, 3) == 2
    assert two_events < 3.0
    none_allowed = alarm_budget_threshold(scores, hours=10.0, budget_per_hour=0.0, rule=AlarmRule("consecutive", 3, quiet_windows=0))
    assert count_alert_events(scores, none_allowed, 3) == 0


def brute_force(scores, breaks, allowed, trigger) -> float:
    """Scan every distinct score level from the top down (down to the median), stop before the first over budget."""
    median = float(np.median(scores))
    levels = sorted({median, *scores[scores >= median].tolist()}, reverse=True)
    chosen = float(scores.max()) * (1 + 1e-6) + 1e-12
    for level in levels:
        if count_alert_events(scores, level, trigger, breaks) > allowed:
            break
        chosen = level
    return chosen


@pytest.mark.parametrize("seed", range(40))
def test_alarm_budget_is_the_lowest_threshold_within_budget(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))  # short enough that the candidate grid covers every score level
    noise = rng.normal(size=n)
    scores = np.convolve(noise, np.ones(4) / 4, mode="same") ** 2 + rng.gamma(1.0, 0.2, n)
    bursts = rng.integers(0, n, int(rng.integers(0, 4)))
    for b in bursts:
        scores[b : b + int(rng.integers(2, 8))] += rng.uniform(1, 5)
    breaks = rng.random(n) < 0.03
    breaks[0] = True
    hours = n * 30 / 3600
    budget = float(rng.choice([0.0, 0.5, 2.0, 5.0, 20.0]))
    trigger = int(rng.integers(1, 5))
    allowed = budget * hours

    threshold = alarm_budget_threshold(scores, hours, budget, AlarmRule("consecutive", trigger, quiet_windows=0), breaks)
    assert np.isfinite(threshold)
    assert count_alert_events(scores, threshold, trigger, breaks) <= allowed
    expected = brute_force(scores, breaks, allowed, trigger)
    # same alarm decisions as the brute-force choice
    np.testing.assert_array_equal(scores > threshold, scores > expected)
    # alarming one more score level (down to the median floor of the scan) would exceed the budget
    quiet_top = scores[scores <= threshold].max()
    lower = [level for level in (np.median(scores), *scores) if np.median(scores) <= level < quiet_top]
    if lower:
        assert count_alert_events(scores, max(lower), trigger, breaks) > allowed
