"""Consecutive-window trigger: run lengths, breaks, carried counts and one alert per run."""
import numpy as np
import pytest

from models.alerting import consecutive_counts, count_alert_events, triggered


def reference_counts(anomalous, breaks, initial=0) -> list[int]:
    """The definition, one window at a time."""
    counts, run = [], initial
    for flag, gap in zip(anomalous, breaks):
        if gap:
            run = 0
        run = run + 1 if flag else 0
        counts.append(run)
    return counts


def test_runs_are_counted():
    flags = np.array([0, 1, 1, 0, 1, 1, 1, 0, 0, 1], bool)
    np.testing.assert_array_equal(consecutive_counts(flags), [0, 1, 2, 0, 1, 2, 3, 0, 0, 1])
    assert consecutive_counts(flags).dtype == np.int64


def test_empty_input():
    assert len(consecutive_counts(np.zeros(0, bool))) == 0
    assert len(consecutive_counts(np.zeros(0, bool), np.zeros(0, bool), initial=5)) == 0


def test_a_break_restarts_the_run():
    flags = np.ones(6, bool)
    breaks = np.array([0, 0, 1, 0, 0, 1], bool)
    np.testing.assert_array_equal(consecutive_counts(flags, breaks), [1, 2, 1, 2, 3, 1])


def test_initial_count_is_carried_into_the_first_run_only():
    flags = np.array([1, 1, 0, 1, 1], bool)
    np.testing.assert_array_equal(consecutive_counts(flags, initial=2), [3, 4, 0, 1, 2])
    # a break before the first window means the previous run is not continued
    breaks = np.array([1, 0, 0, 0, 0], bool)
    np.testing.assert_array_equal(consecutive_counts(flags, breaks, initial=2), [1, 2, 0, 1, 2])
    # a normal first window ends the carried run
    np.testing.assert_array_equal(consecutive_counts(np.array([0, 1], bool), initial=7), [0, 1])


def test_triggered_fires_once_per_run_when_it_reaches_n():
    flags = np.array([1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1], bool)
    counts = consecutive_counts(flags)
    fired = triggered(counts, 3)
    np.testing.assert_array_equal(np.flatnonzero(fired), [2, 11])
    assert count_alert_events(flags.astype(float), 0.5, 3) == 2
    # with N = 1 every run alerts once, at its first window
    np.testing.assert_array_equal(np.flatnonzero(triggered(counts, 1)), [0, 6, 9])


def test_a_run_continued_from_the_previous_batch_does_not_alert_again():
    counts = consecutive_counts(np.ones(4, bool), initial=5)
    assert not triggered(counts, 3).any()
    counts = consecutive_counts(np.ones(4, bool), initial=1)
    np.testing.assert_array_equal(np.flatnonzero(triggered(counts, 3)), [1])


def test_count_alert_events_uses_breaks():
    scores = np.array([5, 5, 5, 5, 5, 5], float)
    assert count_alert_events(scores, 1.0, 3) == 1
    assert count_alert_events(scores, 1.0, 3, np.array([0, 0, 0, 1, 0, 0], bool)) == 2
    assert count_alert_events(scores, 1.0, 3, np.array([0, 0, 1, 0, 1, 0], bool)) == 0
    assert count_alert_events(scores, 5.0, 1) == 0  # strictly above the threshold


@pytest.mark.parametrize("seed", range(30))
def test_matches_the_definition_and_splitting_with_a_carried_count_changes_nothing(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    flags = rng.random(n) < rng.uniform(0.2, 0.9)
    breaks = rng.random(n) < rng.uniform(0.0, 0.2)
    initial = int(rng.integers(0, 5))
    whole = consecutive_counts(flags, breaks, initial)
    np.testing.assert_array_equal(whole, reference_counts(flags, breaks, initial))
    for cut in sorted({0, n, *rng.integers(0, n + 1, 5).tolist()}):
        first = consecutive_counts(flags[:cut], breaks[:cut], initial)
        carried = int(first[-1]) if cut else initial
        second = consecutive_counts(flags[cut:], breaks[cut:], carried)
        np.testing.assert_array_equal(np.r_[first, second].astype(np.int64), whole)
        trigger = int(rng.integers(1, 5))
        assert triggered(first, trigger).sum() + triggered(second, trigger).sum() == triggered(whole, trigger).sum()
