"""Threshold calibration: mean + k·std, and the alarm-budget rule checked by brute force."""
import numpy as np
import pytest

from models.alerting import count_alert_events
from models.thresholds import alarm_budget_threshold, mean_std_threshold


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
        alarm_budget_threshold(np.array([]), 1.0, 0.1, 3)
    with pytest.raises(ValueError, match="empty slice"):
        alarm_budget_threshold(np.ones(10), 0.0, 0.1, 3)


def test_alarm_budget_on_a_constructed_series():
    scores = np.full(100, 1.0)
    scores[10:15] = 5.0  # one run of 5 windows at 5
    scores[40:44] = 3.0  # one run of 4 windows at 3
    scores[70:72] = 4.0  # a run of 2: never alerts with a trigger of 3
    one_event = alarm_budget_threshold(scores, hours=10.0, budget_per_hour=0.1, trigger=3)
    assert count_alert_events(scores, one_event, 3) == 1
    assert 3.0 <= one_event < 5.0  # the run at 3 must stay quiet
    two_events = alarm_budget_threshold(scores, hours=10.0, budget_per_hour=0.2, trigger=3)
    assert count_alert_events(scores, two_events, 3) == 2
    assert two_events < 3.0
    none_allowed = alarm_budget_threshold(scores, hours=10.0, budget_per_hour=0.0, trigger=3)
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

    threshold = alarm_budget_threshold(scores, hours, budget, trigger, breaks)
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
