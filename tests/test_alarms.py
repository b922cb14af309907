"""Alarm rules: consecutive, k-of-n and CUSUM; episodes with a quiet period; state carried across batches."""
import numpy as np
import pytest

from core.settings import DetectionSettings
from models.alarms import AlarmRule, AlarmState, rule_from_settings


def series(*flags: int) -> np.ndarray:
    """Scores 2.0 where flagged, 0.5 elsewhere (threshold 1.0)."""
    return np.where(np.asarray(flags, dtype=bool), 2.0, 0.5)


def test_consecutive_rule_opens_after_n_in_a_row():
    trace = AlarmRule("consecutive", n=3, quiet_windows=0).apply(series(1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1), 1.0)
    assert trace.triggered.nonzero()[0].tolist() == [5, 10]
    assert trace.run.tolist() == [1, 2, 0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert trace.in_episode.tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1]


def test_k_of_n_tolerates_normal_windows_inside_a_fault():
    flickering = series(1, 0, 1, 1, 0, 1, 0, 1, 1, 0)
    assert AlarmRule("consecutive", n=3, quiet_windows=0).count_episodes(flickering, 1.0) == 0
    trace = AlarmRule("k_of_n", n=5, k=3, quiet_windows=3).apply(flickering, 1.0)
    assert trace.triggered.nonzero()[0].tolist() == [3]  # 3 of the last 5 at window 3
    assert trace.in_episode[3:].all()  # never 3 normal windows in a row: one episode throughout


def test_an_episode_closes_after_the_quiet_period_and_only_then_fires_again():
    rule = AlarmRule("k_of_n", n=4, k=2, quiet_windows=3)
    scores = series(1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0)
    trace = rule.apply(scores, 1.0)
    # opens at 1; the gap of two normal windows (2, 3) is shorter than the quiet period: same episode
    assert trace.triggered.nonzero()[0].tolist() == [1, 10]
    assert trace.in_episode.tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1]


def test_cusum_fires_sooner_on_a_large_excursion_than_on_a_small_one():
    rule = AlarmRule("cusum", h=3.0, quiet_windows=0)
    small = np.r_[np.full(5, 0.9), np.full(20, 1.3)]  # +0.3 per window
    large = np.r_[np.full(5, 0.9), np.full(20, 5.0)]  # clipped to +1 per window
    first_small = int(rule.apply(small, 1.0).triggered.argmax())
    first_large = int(rule.apply(large, 1.0).triggered.argmax())
    assert first_large == 5 + 2  # three steps of +1
    assert first_small == 5 + 9  # ten steps of +0.3
    assert rule.count_episodes(np.full(100, 0.99), 1.0) == 0


def test_a_gap_restarts_the_statistic_but_not_the_episode():
    rule = AlarmRule("consecutive", n=3, quiet_windows=5)
    scores = series(1, 1, 1, 1, 1, 1)
    breaks = np.array([0, 0, 0, 1, 0, 0], dtype=bool)
    trace = rule.apply(scores, 1.0, breaks)
    assert trace.run.tolist() == [1, 2, 3, 1, 2, 3]
    assert trace.triggered.sum() == 1


@pytest.mark.parametrize("rule", [AlarmRule("consecutive", 4, quiet_windows=6), AlarmRule("k_of_n", 10, 6, quiet_windows=8), AlarmRule("cusum", h=2.5, quiet_windows=4)])
@pytest.mark.parametrize("seed", range(8))
def test_a_series_split_anywhere_alarms_as_in_one_piece(rule, seed):
    """The state after a batch, encoded as stored and decoded, continues exactly where it stopped."""
    rng = np.random.default_rng(seed)
    scores = np.exp(rng.normal(0, 0.6, 400)) * np.where(rng.random(400) < 0.1, 3.0, 1.0)
    scores[150:190] *= 2.5
    breaks = rng.random(400) < 0.02
    whole = rule.apply(scores, 1.2, breaks)
    cut = int(rng.integers(1, 399))
    first = rule.apply(scores[:cut], 1.2, breaks[:cut])
    carried = AlarmState.decode(first.states[-1])
    assert carried == first.final
    second = rule.apply(scores[cut:], 1.2, breaks[cut:], carried)
    for name in ("is_anomaly", "run", "in_episode", "triggered", "states"):
        np.testing.assert_array_equal(np.r_[getattr(first, name), getattr(second, name)], getattr(whole, name))


def test_state_encoding_round_trips_and_rejects_garbage():
    state = AlarmState(run=7, recent=(1 << 100) | 5, cusum=0.1 + 0.2, open=True, quiet=3)
    assert AlarmState.decode(state.encode()) == state
    assert len(AlarmState(run=10**6, recent=(1 << 128) - 1, cusum=-1.2345678901234567e-300, open=True, quiet=10**6).encode()) <= 100
    assert AlarmState.decode(None, run=4) == AlarmState(run=4)  # a row from before alarm states existed
    with pytest.raises(ValueError, match="unreadable alarm state"):
        AlarmState.decode("1:zz:nan")


def test_rule_parameters_are_checked_and_serialised():
    rule = AlarmRule("k_of_n", n=20, k=12, quiet_windows=60)
    assert AlarmRule.from_dict(rule.to_dict()) == rule
    for bad in ({"rule": "median"}, {"n": 0}, {"n": 500}, {"rule": "k_of_n", "n": 5, "k": 6}, {"h": 0.0}, {"quiet_windows": -1}):
        with pytest.raises(ValueError):
            AlarmRule(**bad)
    det = DetectionSettings(alarm_rule="consecutive", consecutive_trigger=7, quiet_windows=2)
    assert rule_from_settings(det) == AlarmRule("consecutive", n=7, k=min(det.alarm_k, 7), h=det.cusum_h, quiet_windows=2)
    assert rule_from_settings(DetectionSettings()).rule == "k_of_n"
