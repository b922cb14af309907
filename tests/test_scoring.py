"""Scoring windows with the trained model: columns, thresholds, alarm rule, chunks and explanations."""
import threading
import time

import numpy as np
import pytest

from core.windows import WindowSet
import pipeline.scoring as scoring
from core.errors import UnknownCompressorError
from db.schema import build_tables
from tolerances import SCORE_RTOL
from models.alarms import AlarmRule, AlarmState
from models.artifacts import ModelBundle
from pipeline.scoring import score_windows, top_features
from pipeline.timing import StageTimer
from pipeline.windows import build_windows

BASE_COLUMNS = ["window_end", "score", "threshold", "is_anomaly", "consecutive_count", "triggered", "in_alert", "alarm_state", "top_features"]


def test_top_features_names_the_largest_contributions_in_order():
    features = ("a", "b", "c", "d", "e", "f")
    contributions = np.array(
        [
            [0.1, 5.0, 0.2, 9.0, 3.0, 0.0],
            [7.0, 1.0, 1.0, 1.0, 8.0, 6.0],
            [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # ties keep the configured order
        ]
    )
    assert top_features(contributions, features) == ["d, b, e", "e, a, f", "a, b, c"]
    assert top_features(contributions, features, k=1) == ["d", "e", "a"]
    assert top_features(np.zeros((0, 6)), features) == []


@pytest.fixture(scope="module")
def fleet_windows(trained_fleet):
    """C01 windows: day 1 (training, normal) and the first hours of day 2."""
    settings = trained_fleet["settings"]
    tel = trained_fleet["fleet"].telemetry
    unit = tel[tel.compressor_id == "C01"]
    features = list(settings.data.features)
    ws = build_windows(unit[features].to_numpy(), unit.timestamp.to_numpy(), settings.data.window, settings.max_gap_s)
    day2 = np.datetime64(trained_fleet["train_end"], "ns")
    return {
        "day1": ws.take(slice(0, 400)),
        "day2": ws.after(day2).take(slice(0, 600)),
        "std": unit[features].std().to_numpy(),
    }


def with_threshold(bundle: ModelBundle, cid: str, threshold: float | None = None, trigger: int = 3) -> ModelBundle:
    """The same detector with one threshold replaced and an N-in-a-row alarm rule (no quiet period)."""
    thresholds = {**bundle.thresholds, cid: bundle.thresholds[cid] if threshold is None else threshold}
    return ModelBundle(bundle.detector, thresholds, bundle.threshold_rule, AlarmRule("consecutive", trigger, quiet_windows=0), bundle.training_range, bundle.version)


def test_score_windows_columns_and_consistency(trained_fleet, fleet_windows):
    bundle, settings = trained_fleet["bundle"], trained_fleet["settings"]
    error_columns = build_tables(settings).error_columns
    ws = fleet_windows["day2"]
    frame = score_windows(bundle, "C01", ws, error_columns)
    assert list(frame.columns) == BASE_COLUMNS + list(error_columns)
    assert len(frame) == len(ws)
    np.testing.assert_array_equal(frame["window_end"].to_numpy(), ws.end_times)
    assert (frame["threshold"] == bundle.thresholds["C01"]).all()
    np.testing.assert_array_equal(frame["is_anomaly"], frame["score"] > bundle.thresholds["C01"])
    trace = bundle.alarm.apply(frame["score"].to_numpy(), bundle.thresholds["C01"], ws.breaks)
    np.testing.assert_array_equal(frame["consecutive_count"], trace.run)
    np.testing.assert_array_equal(frame["triggered"], trace.triggered)
    np.testing.assert_array_equal(frame["in_alert"], trace.in_episode)
    np.testing.assert_array_equal(frame["alarm_state"], trace.states)
    np.testing.assert_array_equal(frame["top_features"].notna(), frame["is_anomaly"])
    errors = frame[list(error_columns)].to_numpy()
    assert np.isfinite(errors).all() and (errors >= 0).all()
    np.testing.assert_allclose(errors, bundle.detector.feature_errors(ws.windows, "C01"), rtol=SCORE_RTOL)
    np.testing.assert_allclose(frame["score"], bundle.detector.anomaly_score(ws.windows, "C01"), rtol=SCORE_RTOL)


def test_threshold_comparison_and_trigger(trained_fleet, fleet_windows):
    bundle, settings = trained_fleet["bundle"], trained_fleet["settings"]
    error_columns = build_tables(settings).error_columns
    ws = fleet_windows["day2"].take(slice(0, 10))
    trigger = 3
    everything = score_windows(with_threshold(bundle, "C01", -np.inf), "C01", ws, error_columns)
    assert everything["is_anomaly"].all()
    np.testing.assert_array_equal(everything["consecutive_count"], np.arange(1, 11))
    np.testing.assert_array_equal(np.flatnonzero(everything["triggered"]), [trigger - 1])
    assert everything["top_features"].map(lambda s: len(s.split(", "))).eq(3).all()
    # a run carried over from the previous batch continues, and alerts when it reaches N
    carried = score_windows(with_threshold(bundle, "C01", -np.inf), "C01", ws, error_columns, AlarmState(run=trigger - 1))
    np.testing.assert_array_equal(carried["consecutive_count"], np.arange(trigger, trigger + 10))
    np.testing.assert_array_equal(np.flatnonzero(carried["triggered"]), [0])
    nothing = score_windows(with_threshold(bundle, "C01", np.inf), "C01", ws, error_columns)
    assert not nothing["is_anomaly"].any() and not nothing["triggered"].any()
    assert nothing["top_features"].isna().all()
    # a threshold between the scores splits the windows exactly at it
    middle = float(np.median(everything["score"]))
    split = score_windows(with_threshold(bundle, "C01", middle), "C01", ws, error_columns)
    np.testing.assert_array_equal(split["is_anomaly"], everything["score"] > middle)


def test_chunked_scoring_equals_one_pass(trained_fleet, fleet_windows, monkeypatch):
    bundle, settings = trained_fleet["bundle"], trained_fleet["settings"]
    error_columns = build_tables(settings).error_columns
    whole = score_windows(bundle, "C01", fleet_windows["day2"], error_columns)
    monkeypatch.setattr(scoring, "INFERENCE_CHUNK", 97)
    chunked = score_windows(bundle, "C01", fleet_windows["day2"], error_columns)
    np.testing.assert_allclose(chunked[list(error_columns)], whole[list(error_columns)], rtol=SCORE_RTOL)
    np.testing.assert_allclose(chunked["score"], whole["score"], rtol=SCORE_RTOL)
    np.testing.assert_array_equal(chunked["is_anomaly"], whole["is_anomaly"])


def test_top_features_of_a_constructed_fault(trained_fleet, fleet_windows):
    """Three signals pushed far out of range are the three named, and have the three largest errors."""
    bundle, settings = trained_fleet["bundle"], trained_fleet["settings"]
    error_columns = build_tables(settings).error_columns
    features = settings.data.features
    hit = ("seal_gas_flow", "vibration", "discharge_pressure")
    ws = fleet_windows["day1"].take(slice(0, 50))
    windows = ws.windows.copy()
    for size, name in zip((20.0, 30.0, 40.0), hit):
        windows[:, :, features.index(name)] += size * fleet_windows["std"][features.index(name)]
    faulty = WindowSet(windows, np.arange(len(windows)), ws.end_times, ws.breaks)
    frame = score_windows(with_threshold(bundle, "C01", trigger=3), "C01", faulty, error_columns)
    assert frame["is_anomaly"].all()
    assert all(set(names.split(", ")) == set(hit) for names in frame["top_features"])
    errors = frame[list(error_columns)].to_numpy()
    largest = {features[i] for row in np.argsort(-errors, axis=1)[:, :3] for i in row}
    assert largest == set(hit)
    assert frame["triggered"].sum() == 1  # one run of 50 anomalous windows: one alert


def test_unknown_compressor(trained_fleet, fleet_windows):
    bundle, settings = trained_fleet["bundle"], trained_fleet["settings"]
    with pytest.raises(UnknownCompressorError, match="C99"):
        score_windows(bundle, "C99", fleet_windows["day2"], build_tables(settings).error_columns)


class _SlowDetector:
    """Scores every window 1.0 after a pause, recording how many calls are inside it at once."""

    name, features, window = "slow", ("a", "b"), 3

    def __init__(self) -> None:
        self.inside = self.most = 0
        self.lock = threading.Lock()

    def anomaly_score_details(self, windows, cid):
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.05)
        with self.lock:
            self.inside -= 1
        n = len(windows)
        return np.ones(n), np.ones((n, 2)), np.ones((n, 2))


def test_one_compressor_at_a_time_goes_through_the_detector_and_the_wait_is_timed_apart():
    detector = _SlowDetector()
    bundle = ModelBundle(detector, {"C01": 2.0, "C02": 2.0, "C03": 2.0}, "fixed", AlarmRule("consecutive", 3, quiet_windows=0))
    values = np.arange(40, dtype=np.float32).reshape(20, 2)
    times = np.datetime64("2026-01-01T00:00:00", "ns") + np.arange(20) * np.timedelta64(30, "s")
    ws = build_windows(values, times, 3, 60.0)
    timers = [StageTimer() for _ in range(3)]
    threads = [threading.Thread(target=score_windows, args=(bundle, f"C0{i + 1}", ws, ("err_a", "err_b"), None, timers[i])) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert detector.most == 1
    assert all(timer.seconds["inference"] >= 0.045 for timer in timers)
    assert sum(timer.seconds["queued"] for timer in timers) >= 0.09  # the later two waited for the turn
    assert not scoring.INFERENCE_TURN.locked()


def test_the_turn_is_given_back_when_the_detector_fails():
    class Failing(_SlowDetector):
        def anomaly_score_details(self, windows, cid):
            raise RuntimeError("boom")

    bundle = ModelBundle(Failing(), {"C01": 2.0}, "fixed", AlarmRule("consecutive", 3, quiet_windows=0))
    ws = build_windows(np.zeros((10, 2), np.float32), np.datetime64("2026-01-01", "ns") + np.arange(10) * np.timedelta64(30, "s"), 3, 60.0)
    with pytest.raises(RuntimeError, match="boom"):
        score_windows(bundle, "C01", ws, ("err_a", "err_b"))
    assert not scoring.INFERENCE_TURN.locked()
