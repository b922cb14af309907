"""Row validation: each documented rule, its rejection count and the skip / impute choice."""
import numpy as np
import pandas as pd
import pytest

from pipeline.validate import validate_rows

FEATURES = ("a", "b")
T0 = pd.Timestamp("2026-01-01 00:00:00")


def frame(a, b, times=None) -> pd.DataFrame:
    times = times if times is not None else [T0 + pd.Timedelta(seconds=30 * i) for i in range(len(a))]
    return pd.DataFrame({"timestamp": times, "a": a, "b": b})


def run(data: pd.DataFrame, rule: str = "skip", window: int = 3):
    return validate_rows(data, "timestamp", FEATURES, rule, window)


def test_clean_rows_pass_unchanged():
    clean = run(frame([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]))
    assert clean.values.dtype == np.float32
    assert clean.times.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(clean.values, [[1, 4], [2, 5], [3, 6]])
    assert list(clean.times) == [np.datetime64(T0 + pd.Timedelta(seconds=30 * i), "ns") for i in range(3)]
    assert not clean.rejected
    assert clean.rows_rejected == 0


def test_missing_value_is_dropped_under_skip():
    clean = run(frame([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]), "skip")
    np.testing.assert_array_equal(clean.values[:, 0], [1, 3, 4])
    assert clean.times[1] == np.datetime64(T0 + pd.Timedelta(seconds=60), "ns")
    assert clean.rejected == {"missing_value": 1}
    assert clean.rows_rejected == 1


def test_missing_value_is_filled_from_the_previous_row_under_impute():
    clean = run(frame([1.0, np.nan, 3.0], [1.0, 2.0, np.nan]), "impute")
    np.testing.assert_array_equal(clean.values, [[1, 1], [1, 2], [3, 2]])
    assert len(clean.times) == 3
    assert clean.rejected == {"imputed": 2}
    assert clean.rows_rejected == 0


def test_impute_fills_at_most_window_rows_and_drops_the_rest():
    a = [1.0, np.nan, np.nan, np.nan, np.nan, 6.0]
    clean = run(frame(a, [0.0] * 6), "impute", window=2)
    np.testing.assert_array_equal(clean.values[:, 0], [1, 1, 1, 6])
    assert clean.rejected == {"imputed": 2, "missing_value": 2}
    assert clean.rows_rejected == 2


def test_impute_cannot_fill_a_leading_hole():
    clean = run(frame([np.nan, 2.0, 3.0], [1.0, 2.0, 3.0]), "impute")
    np.testing.assert_array_equal(clean.values[:, 0], [2, 3])
    assert clean.rejected == {"missing_value": 1}


def test_infinite_values_become_missing():
    clean = run(frame([1.0, np.inf, 3.0], [1.0, 2.0, -np.inf]), "skip")
    np.testing.assert_array_equal(clean.values, [[1, 1]])
    assert clean.rejected == {"infinite": 2, "missing_value": 2}
    assert clean.rows_rejected == 2  # counted once, as missing
    imputed = run(frame([1.0, np.inf, 3.0], [1.0, 2.0, 3.0]), "impute")
    np.testing.assert_array_equal(imputed.values[:, 0], [1, 1, 3])
    assert imputed.rejected == {"infinite": 1, "imputed": 1}


def test_non_numeric_values_become_missing():
    clean = run(frame([1.0, "abc", 3.0], ["1.5", 2.0, 3.0]), "skip")
    np.testing.assert_array_equal(clean.values, [[1, 1.5], [3, 3]])  # numeric strings are numbers
    assert clean.rejected == {"non_numeric": 1, "missing_value": 1}
    assert np.isfinite(clean.values).all()


def test_unparseable_timestamps_are_rejected():
    times = ["2026-01-01 00:00:00", "not a time", None, "2026-01-01 00:01:00"]
    clean = run(frame([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], times))
    np.testing.assert_array_equal(clean.values[:, 0], [1, 4])
    assert clean.rejected == {"bad_timestamp": 2}
    assert clean.rows_rejected == 2


def test_duplicate_timestamps_are_merged_by_their_mean_in_any_order():
    times = [T0, T0 + pd.Timedelta(seconds=30), T0 + pd.Timedelta(seconds=30), T0 + pd.Timedelta(seconds=30), T0 + pd.Timedelta(seconds=60)]
    data = frame([1.0, 2.0, 4.0, 9.0, 5.0], [0.0, 10.0, 20.0, 30.0, 1.0], times)
    clean = run(data)
    np.testing.assert_allclose(clean.values, [[1, 0], [5, 20], [5, 1]])
    assert clean.rejected == {"duplicate_timestamp": 2}
    assert clean.rows_rejected == 2
    shuffled = run(data.sample(frac=1.0, random_state=3))
    np.testing.assert_array_equal(shuffled.values, clean.values)
    np.testing.assert_array_equal(shuffled.times, clean.times)


def test_duplicate_with_a_missing_value_uses_the_other_rows_value():
    clean = run(frame([1.0, np.nan], [2.0, 4.0], [T0, T0]))
    np.testing.assert_allclose(clean.values, [[1, 3]])
    assert clean.rejected == {"duplicate_timestamp": 1}


def test_out_of_order_rows_are_sorted():
    data = frame([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0])
    clean = run(data.iloc[[2, 0, 3, 1]])
    expected = run(data)
    np.testing.assert_array_equal(clean.times, expected.times)
    np.testing.assert_array_equal(clean.values, expected.values)
    assert np.all(np.diff(clean.times) > np.timedelta64(0, "ns"))
    assert not clean.rejected


def test_timezone_aware_timestamps_become_naive_utc():
    clean = run(frame([1.0, 2.0], [1.0, 2.0], ["2026-01-01T01:00:00+01:00", "2026-01-01T01:00:30+01:00"]))
    assert clean.times[0] == np.datetime64("2026-01-01T00:00:00", "ns")


def test_several_reasons_are_counted_separately():
    times = ["2026-01-01 00:00:00", "bad", "2026-01-01 00:00:30", "2026-01-01 00:00:30", "2026-01-01 00:01:00", "2026-01-01 00:01:30"]
    data = frame([1.0, 2.0, 3.0, 5.0, "x", np.inf], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], times)
    clean = run(data, "skip")
    assert clean.rejected == {"bad_timestamp": 1, "duplicate_timestamp": 1, "non_numeric": 1, "infinite": 1, "missing_value": 2}
    assert clean.rows_rejected == 4
    np.testing.assert_array_equal(clean.values[:, 0], [1, 4])
    assert len(clean.times) + clean.rows_rejected == len(data)  # every input row is accounted for


@pytest.mark.parametrize("missing", ["timestamp", "b"])
def test_missing_column_raises_key_error_naming_it(missing):
    data = frame([1.0], [2.0]).drop(columns=[missing])
    with pytest.raises(KeyError, match=missing):
        run(data)
