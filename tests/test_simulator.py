"""Tests for the synthetic compressor-fleet simulator."""
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from core.errors import PipelineError
from core.settings import DEFAULT_FEATURES
from simulation.fleet import FAULT_TYPES, SimulatedFleet, simulate_fleet

START = datetime(2026, 1, 1)


@pytest.fixture(scope="module")
def fleet() -> SimulatedFleet:
    return simulate_fleet(n_compressors=5, days=7.0, start=START, seed=7)


@pytest.fixture(scope="module")
def long_fleet() -> SimulatedFleet:
    """Long enough for every fault type to occur several times."""
    return simulate_fleet(n_compressors=6, days=12.0, start=START, seed=21, fault_free_days=1.0)


def _by_compressor(fleet: SimulatedFleet):
    for cid, unit in fleet.telemetry.groupby("compressor_id"):
        yield cid, unit.reset_index(drop=True), fleet.events[fleet.events.compressor_id == cid]


def _load_adjusted_z(unit: pd.DataFrame, signal: str) -> np.ndarray:
    """Residual of `signal` after a least-squares fit on normal rows, in normal-row std units.

    Regressors: a cubic in load, load lagged by 5 minutes (thermal inertia) and the time of day.
    Flow stands for load; for flow itself motor current does.
    """
    normal = unit.label.to_numpy() == 0
    load = unit["motor_current" if signal == "flow" else "flow"]
    x = (load / load.mean()).to_numpy()
    lagged = pd.Series(x).ewm(alpha=1 - np.exp(-30 / 300)).mean()  # 30 s rows, 5 min lag
    hour = 2 * np.pi * (unit.timestamp.dt.hour + unit.timestamp.dt.minute / 60).to_numpy() / 24
    design = np.column_stack([np.ones_like(x), x, x**2, x**3, lagged, np.sin(hour), np.cos(hour)])
    y = unit[signal].to_numpy()
    fit = design[normal]
    coef = np.linalg.solve(fit.T @ fit, fit.T @ y[normal])
    residual = y - design @ coef
    return residual / residual[normal].std()


def _rows(unit: pd.DataFrame, event) -> np.ndarray:
    return ((unit.timestamp >= event.start) & (unit.timestamp <= event.end)).to_numpy()


def test_columns_dtypes_and_order(fleet):
    tel = fleet.telemetry
    assert list(tel.columns) == ["timestamp", "compressor_id", *DEFAULT_FEATURES, "label"]
    assert len(tel) == 5 * 7 * 2880
    assert tel["timestamp"].dtype == np.dtype("datetime64[ns]")
    assert pd.api.types.is_string_dtype(tel["compressor_id"])
    assert all(tel[f].dtype == np.float64 for f in DEFAULT_FEATURES)
    assert tel["label"].dtype == np.int64
    assert set(tel["label"].unique()) == {0, 1}
    assert np.isfinite(tel[list(DEFAULT_FEATURES)].to_numpy()).all()
    assert sorted(tel.compressor_id.unique()) == ["C01", "C02", "C03", "C04", "C05"]
    assert tel.equals(tel.sort_values(["compressor_id", "timestamp"], ignore_index=True))
    for _, unit, _ in _by_compressor(fleet):
        assert unit.timestamp.iloc[0] == pd.Timestamp(START)
        assert (unit.timestamp.diff().dropna() == pd.Timedelta(seconds=30)).all()
    assert list(fleet.events.columns) == ["compressor_id", "fault_type", "start", "end", "detectable_from"]
    assert fleet.events["start"].dtype == np.dtype("datetime64[ns]")
    assert set(fleet.events.fault_type) <= set(FAULT_TYPES)


def test_three_digit_ids_from_100_compressors():
    tel = simulate_fleet(n_compressors=100, days=0.25, interval_s=3600.0, seed=1).telemetry
    ids = tel.compressor_id.unique()
    assert ids[0] == "C001" and ids[-1] == "C100" and len(ids) == 100
    assert (tel.groupby("compressor_id").size() == 6).all()


def test_feature_subset_and_tz_aware_start():
    start = datetime(2026, 3, 1, 6, 0, tzinfo=timezone(timedelta(hours=2)))
    tel = simulate_fleet(
        n_compressors=2, days=1.0, start=start, seed=3, features=("vibration", "flow")
    ).telemetry
    assert list(tel.columns) == ["timestamp", "compressor_id", "vibration", "flow", "label"]
    assert tel.timestamp.iloc[0] == pd.Timestamp("2026-03-01 04:00:00")


def test_same_seed_same_frames_other_seed_differs(fleet):
    again = simulate_fleet(n_compressors=5, days=7.0, start=START, seed=7)
    pd.testing.assert_frame_equal(fleet.telemetry, again.telemetry)
    pd.testing.assert_frame_equal(fleet.events, again.events)
    other = simulate_fleet(n_compressors=5, days=7.0, start=START, seed=8)
    assert not np.allclose(fleet.telemetry.flow, other.telemetry.flow)
    assert not fleet.events.equals(other.events)


def test_no_fault_before_fault_free_days(long_fleet):
    boundary = pd.Timestamp(START) + pd.Timedelta(days=1)
    assert len(long_fleet.events) > 0
    assert (long_fleet.events.start >= boundary).all()
    tel = long_fleet.telemetry
    assert (tel.loc[tel.timestamp < boundary, "label"] == 0).all()


def test_labels_match_events_exactly(long_fleet):
    for _, unit, events in _by_compressor(long_fleet):
        expected = np.zeros(len(unit), dtype=np.int64)
        for event in events.itertuples():
            expected[_rows(unit, event)] = 1
        np.testing.assert_array_equal(unit.label.to_numpy(), expected)


def test_detectable_from_is_where_a_gradual_fault_has_grown_to_two_residual_sds(long_fleet):
    events = long_fleet.events
    inside = (events.detectable_from >= events.start) & (events.detectable_from <= events.end)
    assert (inside | events.detectable_from.isna()).all()
    gradual = events[events.fault_type.isin(["seal_degradation", "filter_clogging", "fouling", "sensor_drift"])]
    lag = gradual.detectable_from - gradual.start
    assert gradual.detectable_from.notna().all()  # sizes are 6-10 SDs: every such fault gets there
    assert (lag > pd.Timedelta(0)).mean() > 0.9  # they start smaller than 2 SDs
    assert (lag < gradual.end - gradual.start).all()
    for cid, unit, unit_events in _by_compressor(long_fleet):
        for event in unit_events[unit_events.fault_type == "filter_clogging"].itertuples():
            rows = _rows(unit, event)
            z = _load_adjusted_z(unit, "filter_dp")[rows]
            at = int(np.argmax(unit.timestamp[rows].to_numpy() >= np.datetime64(event.detectable_from)))
            # the shift grows: in the quarter hour after `detectable_from` filter_dp sits higher than in the quarter hour from the start
            assert z[at : at + 30].mean() > z[:30].mean()


def test_event_durations_spacing_and_rate(long_fleet):
    events = long_fleet.events
    durations = events.end - events.start
    assert (durations >= pd.Timedelta(minutes=59)).all() and (durations <= pd.Timedelta(hours=6)).all()
    for _, unit_events in events.groupby("compressor_id"):
        gaps = unit_events.start.iloc[1:].to_numpy() - unit_events.end.iloc[:-1].to_numpy()
        assert (gaps >= np.timedelta64(2, "h")).all()
    per_unit_day = len(events) / (6 * 11.0)
    assert 0.4 <= per_unit_day <= 1.2
    assert set(events.fault_type) == set(FAULT_TYPES)


def test_load_moves_process_signals_coherently(fleet):
    for _, unit, _ in _by_compressor(fleet):
        normal = unit[unit.label == 0]
        assert normal.flow.std() / normal.flow.mean() > 0.1  # load really varies
        assert normal.flow.corr(normal.motor_current) > 0.9
        assert normal.flow.corr(normal.discharge_pressure) > 0.9
        assert normal.flow.corr(normal.seal_gas_flow) > 0.5


def test_compressors_differ_in_baseline(fleet):
    normal = fleet.telemetry[fleet.telemetry.label == 0]
    for signal in ("separation_seal_gas_pressure", "seal_gas_diff_pressure", "vibration"):
        medians = normal.groupby("compressor_id")[signal].median()
        within = normal.groupby("compressor_id")[signal].std().mean()
        assert medians.max() - medians.min() > 2 * within
        assert medians.round(6).nunique() == len(medians)


@pytest.mark.parametrize(
    ("fault_type", "signal", "direction"),
    [
        ("seal_degradation", "primary_vent_flow", 1),
        ("seal_degradation", "primary_vent_pressure", 1),
        ("seal_degradation", "seal_gas_to_vent_diff_pressure", -1),
        ("filter_clogging", "filter_dp", 1),
        ("filter_clogging", "seal_gas_flow", -1),
        ("bearing_wear", "vibration", 1),
        ("bearing_wear", "temperature", 1),
        ("fouling", "discharge_pressure", -1),
        ("fouling", "motor_current", 1),
    ],
)
def test_process_faults_shift_their_signals(long_fleet, fault_type, signal, direction):
    shifts = []
    for _, unit, events in _by_compressor(long_fleet):
        z = _load_adjusted_z(unit, signal)
        for event in events[events.fault_type == fault_type].itertuples():
            developed = np.flatnonzero(_rows(unit, event))[-20:]  # onset is over by the end
            shifts.append(direction * z[developed].mean())
    assert len(shifts) >= 2
    assert min(shifts) > 2.5
    assert np.median(shifts) < 20  # visible, not absurd


def test_seal_degradation_raises_vent_flow_over_normal_rows(fleet):
    events = fleet.events[fleet.events.fault_type == "seal_degradation"]
    assert len(events) > 0
    for event in events.itertuples():
        unit = fleet.telemetry[fleet.telemetry.compressor_id == event.compressor_id]
        during = unit.primary_vent_flow[_rows(unit, event)]
        assert during.mean() > unit.primary_vent_flow[unit.label == 0].mean()


def test_surge_oscillates_flow(long_fleet):
    for _, unit, events in _by_compressor(long_fleet):
        normal_step = unit.flow[unit.label == 0].diff().abs().median()
        for event in events[events.fault_type == "surge"].itertuples():
            steps = unit.flow[_rows(unit, event)].diff().abs()
            assert steps.iloc[len(steps) // 2 :].median() > 3 * normal_step


def test_sensor_faults_are_visible(long_fleet):
    seen = set()
    for _, unit, events in _by_compressor(long_fleet):
        z = pd.DataFrame({s: _load_adjusted_z(unit, s) for s in DEFAULT_FEATURES})
        for event in events[events.fault_type.str.startswith("sensor_")].itertuples():
            rows = _rows(unit, event)
            if event.fault_type == "sensor_stuck":
                assert (unit.loc[rows, list(DEFAULT_FEATURES)].nunique() == 1).sum() == 1
                assert rows.sum() >= 240  # at least 2 h of flat line
            elif event.fault_type == "sensor_spike":
                assert (z[rows].abs() > 5).sum().max() >= 3
            else:
                assert z[rows].iloc[-20:].mean().abs().max() > 4
            seen.add(event.fault_type)
    assert seen == {"sensor_stuck", "sensor_spike", "sensor_drift"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_compressors": 0}, "n_compressors"),
        ({"days": 0}, "days"),
        ({"days": -1.0}, "days"),
        ({"interval_s": 0}, "interval_s"),
        ({"interval_s": -30.0}, "interval_s"),
        ({"fault_free_days": -1.0}, "fault_free_days"),
        ({"features": ("flow", "no_such_signal")}, "no_such_signal"),
        ({"features": ()}, "features"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(PipelineError, match=message):
        simulate_fleet(**kwargs)
