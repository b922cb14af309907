"""Gap-aware windows: counts, shapes, end times, breaks, subsets, chunks and the strided view."""
import numpy as np
import pytest

from core.windows import WindowSet
from pipeline.windows import build_windows, count_gaps, segment_starts

INTERVAL_S = 30.0
MAX_GAP_S = 1.5 * INTERVAL_S
T0 = np.datetime64("2026-01-01T00:00:00", "ns")


def regular_times(n: int) -> np.ndarray:
    return T0 + np.arange(n) * np.timedelta64(30, "s")


def times_from_spacing(spacing_s) -> np.ndarray:
    offsets = np.r_[0, np.cumsum(spacing_s)].astype(np.int64)
    return T0 + offsets * np.timedelta64(1, "s")


def make_values(n: int, features: int = 3) -> np.ndarray:
    return np.arange(n * features, dtype=np.float32).reshape(n, features)


def brute_force_windows(times: np.ndarray, window: int, max_gap_s: float) -> list[int]:
    """Start rows of every window whose consecutive spacings are all within max_gap_s."""
    spacing = np.diff(times) / np.timedelta64(1, "s")
    return [s for s in range(len(times) - window + 1) if np.all(spacing[s : s + window - 1] <= max_gap_s)]


def test_count_shape_and_end_times_without_gaps():
    values, times = make_values(100), regular_times(100)
    ws = build_windows(values, times, 10, MAX_GAP_S)
    assert len(ws) == 91
    assert ws.view.shape == (91, 10, 3)
    assert ws.windows.shape == (91, 10, 3)
    np.testing.assert_array_equal(ws.end_times, times[9:])
    np.testing.assert_array_equal(ws.breaks, np.r_[True, np.zeros(90, bool)])
    for i in (0, 45, 90):
        np.testing.assert_array_equal(ws.windows[i], values[i : i + 10])
    np.testing.assert_array_equal(ws.last_rows(), values[9:])


def test_fewer_rows_than_a_window_gives_an_empty_set():
    ws = build_windows(make_values(5), regular_times(5), 10, MAX_GAP_S)
    assert len(ws) == 0
    assert ws.windows.shape == (0, 10, 3)
    assert list(ws.chunks(4)) == []


def test_no_window_spans_a_gap_and_the_first_after_it_is_a_break():
    spacing = [30.0] * 39 + [46.0] + [30.0] * 60  # rows 0..39, gap, rows 40..100
    times = times_from_spacing(spacing)
    values = make_values(len(times))
    ws = build_windows(values, times, 10, MAX_GAP_S)
    # 40 rows before the gap -> 31 windows, 61 rows after -> 52 windows
    assert len(ws) == 31 + 52
    np.testing.assert_array_equal(ws.index, np.r_[np.arange(0, 31), np.arange(40, 92)])
    expected_breaks = np.zeros(len(ws), bool)
    expected_breaks[[0, 31]] = True
    np.testing.assert_array_equal(ws.breaks, expected_breaks)
    assert count_gaps(times, MAX_GAP_S) == 1


def test_spacing_of_exactly_the_allowed_gap_is_not_a_gap():
    times = times_from_spacing([30.0] * 5 + [45.0] + [30.0] * 5)
    ws = build_windows(make_values(len(times)), times, 4, MAX_GAP_S)
    assert len(ws) == len(times) - 3
    assert ws.breaks.sum() == 1
    assert count_gaps(times, MAX_GAP_S) == 0
    np.testing.assert_array_equal(segment_starts(times, MAX_GAP_S), np.r_[True, np.zeros(len(times) - 1, bool)])


@pytest.mark.parametrize("seed", range(20))
def test_random_gaps_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    spacing = np.where(rng.random(n - 1) < 0.05, rng.uniform(46, 4000, n - 1), rng.choice([29.0, 30.0, 31.0, 45.0], n - 1))
    times = times_from_spacing(spacing)
    window = int(rng.integers(2, 12))
    values = rng.normal(size=(n, 4)).astype(np.float32)
    ws = build_windows(values, times, window, MAX_GAP_S)
    starts = brute_force_windows(times, window, MAX_GAP_S)
    np.testing.assert_array_equal(ws.index, starts)
    np.testing.assert_array_equal(ws.end_times, times[np.asarray(starts, dtype=int) + window - 1])
    for i, start in enumerate(starts):
        np.testing.assert_array_equal(ws.windows[i], values[start : start + window])
        span = np.diff(times[start : start + window]) / np.timedelta64(1, "s")
        assert np.all(span <= MAX_GAP_S)
    expected_breaks = np.r_[True, np.diff(starts) != 1] if starts else np.zeros(0, bool)
    np.testing.assert_array_equal(ws.breaks, expected_breaks)


def test_after_keeps_windows_ending_strictly_later():
    times = regular_times(50)
    ws = build_windows(make_values(50), times, 5, MAX_GAP_S)
    assert ws.after(None) is ws
    later = ws.after(times[20])
    np.testing.assert_array_equal(later.end_times, times[21:])
    # the first remaining window directly follows the one before it: not a break
    assert not later.breaks[0]
    assert not later.breaks.any()
    between = ws.after(times[20] + np.timedelta64(10, "s"))
    np.testing.assert_array_equal(between.end_times, times[21:])
    assert len(ws.after(times[-1])) == 0
    assert len(ws.after(T0 - np.timedelta64(1, "D"))) == len(ws)


def test_take_recomputes_breaks():
    ws = build_windows(make_values(30), regular_times(30), 5, MAX_GAP_S)
    subset = ws.take(np.array([0, 1, 2, 5, 6, 10]))
    np.testing.assert_array_equal(subset.breaks, [True, False, False, True, False, True])
    np.testing.assert_array_equal(subset.index, ws.index[[0, 1, 2, 5, 6, 10]])
    np.testing.assert_array_equal(subset.end_times, ws.end_times[[0, 1, 2, 5, 6, 10]])
    strided = ws.take(slice(None, None, 2))
    assert strided.breaks.all()
    contiguous = ws.take(slice(3, 9))
    np.testing.assert_array_equal(contiguous.breaks, np.zeros(6, bool))  # window 3 follows window 2
    assert len(ws.take(slice(5, 5))) == 0
    # the original set is unchanged
    np.testing.assert_array_equal(ws.breaks, np.r_[True, np.zeros(len(ws) - 1, bool)])


def test_chunks_are_copies_of_the_right_windows():
    times = times_from_spacing([30.0] * 20 + [300.0] + [30.0] * 30)
    values = make_values(len(times))
    ws = build_windows(values, times, 6, MAX_GAP_S)
    pieces = list(ws.chunks(7))
    assert [offset for offset, _ in pieces] == list(range(0, len(ws), 7))
    assert sum(len(w) for _, w in pieces) == len(ws)
    assert all(len(w) <= 7 for _, w in pieces)
    for offset, windows in pieces:
        np.testing.assert_array_equal(windows, ws.windows[offset : offset + len(windows)])
        assert not np.shares_memory(windows, values)
    windows = pieces[0][1]
    windows[:] = -1.0  # writing into a chunk leaves the data alone
    assert values.min() >= 0


def test_view_is_a_view_of_the_rows():
    values, times = make_values(40), regular_times(40)
    ws = build_windows(values, times, 8, MAX_GAP_S)
    assert isinstance(ws, WindowSet)
    assert np.shares_memory(ws.view, values)
    assert not np.shares_memory(ws.windows, values)
    # a float64 input is converted once; the view shares memory with that copy, not the input
    ws64 = build_windows(values.astype(np.float64), times, 8, MAX_GAP_S)
    assert ws64.view.dtype == np.float32
    np.testing.assert_array_equal(ws64.windows, ws.windows)
