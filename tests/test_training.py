"""Training: the time split, per-compressor thresholds under both rules, seeding, adding a compressor."""
import logging
from datetime import datetime

import numpy as np
import pytest

from core.settings import with_section
from models.alerting import count_alert_events
from models.artifacts import load_bundle, save_bundle
from models.thresholds import mean_std_threshold
from models.training import add_compressor_to_bundle, calibrate, make_detector, time_split, train_bundle
from pipeline.windows import build_windows
from simulation.fleet import simulate_fleet
from tests.conftest import tiny_settings

FEATURES = ("flow", "vibration", "motor_current", "temperature")
WINDOW = 8
T0 = np.datetime64("2026-01-01T00:00:00", "ns")


def small_settings(tmp_path, rule: str = "mean_std"):
    settings = tiny_settings(tmp_path, epochs=2, patience=2, seed=5)
    settings = with_section(settings, "data", window=WINDOW, features=FEATURES)
    return with_section(settings, "detection", threshold_rule=rule, alarm_budget_per_hour=0.5)


def windows_of(telemetry, settings) -> dict:
    return {
        cid: build_windows(unit[list(FEATURES)].to_numpy(), unit.timestamp.to_numpy(), settings.data.window, settings.max_gap_s)
        for cid, unit in telemetry.groupby("compressor_id")
    }


# ------------------------------------------------------------------ time split
def test_time_split_keeps_time_order_and_shares_no_rows():
    n_rows, window = 400, 10
    spacing = np.full(n_rows - 1, 30)
    spacing[150] = 600  # one gap
    times = T0 + np.r_[0, np.cumsum(spacing)].astype(np.int64) * np.timedelta64(1, "s")
    ws = build_windows(np.zeros((n_rows, 2)), times, window, 45.0)
    split = time_split(ws, 0.2)
    cut = int(round(len(ws) * 0.8))
    assert len(split.fit) == cut
    np.testing.assert_array_equal(split.fit.index, ws.index[:cut])
    np.testing.assert_array_equal(split.holdout.index, ws.index[cut + window :])
    fit_rows = {int(i) + k for i in split.fit.index for k in range(window)}
    holdout_rows = {int(i) + k for i in split.holdout.index for k in range(window)}
    assert not fit_rows & holdout_rows
    assert max(fit_rows) < min(holdout_rows)
    assert split.fit.end_times.max() < split.holdout.end_times.min()
    assert np.all(np.diff(split.holdout.end_times) > np.timedelta64(0, "s"))
    assert split.fit.breaks[0]
    assert len(split.fit) + len(split.holdout) == len(ws) - window


def test_time_split_of_an_empty_set():
    ws = build_windows(np.zeros((3, 2)), T0 + np.arange(3) * np.timedelta64(30, "s"), 10, 45.0)
    split = time_split(ws, 0.2)
    assert len(split.fit) == len(split.holdout) == 0


def test_too_few_windows_is_a_clear_error(tmp_path, caplog):
    settings = small_settings(tmp_path)
    tiny = build_windows(np.zeros((15, len(FEATURES))), T0 + np.arange(15) * np.timedelta64(30, "s"), WINDOW, 45.0)
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="no compressor has enough normal windows"):
        train_bundle({"C09": tiny}, settings, (None, None))
    assert "compressor C09: only 8 normal windows, skipped from training" in caplog.text


def test_unknown_detector(tmp_path):
    settings = with_section(small_settings(tmp_path), "detection", detector="nope")
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        make_detector(settings)


# ------------------------------------------------------------- trained models
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two trainings with the same seed on C01 and C02 (one per threshold rule); C03 is kept for adding."""
    tmp = tmp_path_factory.mktemp("training")
    fleet = simulate_fleet(3, 0.5, start=datetime(2026, 1, 1), seed=3, features=FEATURES, fault_free_days=1.0)
    assert fleet.events.empty  # all rows normal
    mean_std, budget = small_settings(tmp, "mean_std"), small_settings(tmp, "alarm_budget")
    sets = windows_of(fleet.telemetry, mean_std)
    base = {cid: sets[cid] for cid in ("C01", "C02")}
    first = train_bundle(base, mean_std, ("2026-01-01T00:00:00", "2026-01-01T12:00:00"))
    probe = {cid: sets[cid].windows[-200:] for cid in base}
    snapshot = {
        "weights": [w.copy() for w in first.detector.model.get_weights()],
        "errors": {cid: first.detector.feature_errors(w, cid) for cid, w in probe.items()},
        "scores": {cid: first.detector.score_samples(w, cid) for cid, w in probe.items()},
        "thresholds": dict(first.thresholds),
    }
    second = train_bundle(base, budget, (None, None))
    return {"sets": sets, "mean_std": mean_std, "budget": budget, "first": first, "second": second, "probe": probe, "snapshot": snapshot, "dir": tmp}


def test_mean_std_thresholds_per_compressor(trained):
    bundle, settings = trained["first"], trained["mean_std"]
    assert bundle.threshold_rule == "mean_std"
    assert sorted(bundle.thresholds) == ["C01", "C02"]
    for cid, threshold in bundle.thresholds.items():
        assert np.isfinite(threshold)
        split = time_split(trained["sets"][cid], settings.training.validation_fraction)
        normal = np.concatenate([bundle.detector.score_samples(part.windows, cid) for part in (split.fit, split.holdout)])
        assert threshold == pytest.approx(mean_std_threshold(normal, settings.detection.threshold_k), rel=1e-9)
        assert np.mean(normal > threshold) < 0.2  # most normal windows stay below it


def test_alarm_budget_thresholds_keep_the_holdout_within_budget(trained):
    bundle, settings = trained["second"], trained["budget"]
    assert bundle.threshold_rule == "alarm_budget"
    assert sorted(bundle.thresholds) == ["C01", "C02"]
    det = settings.detection
    for cid, threshold in bundle.thresholds.items():
        assert np.isfinite(threshold)
        holdout = time_split(trained["sets"][cid], settings.training.validation_fraction).holdout
        hours = len(holdout) * settings.data.sampling_interval_s / 3600
        scores = bundle.detector.score_samples(holdout.windows, cid)
        assert count_alert_events(scores, threshold, det.consecutive_trigger, holdout.breaks) <= det.alarm_budget_per_hour * hours


def test_same_seed_same_model(trained):
    """The threshold rule only changes calibration, so both trainings must fit identical weights."""
    first, second, snapshot = trained["first"], trained["second"], trained["snapshot"]
    for a, b in zip(snapshot["weights"], second.detector.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for cid, windows in trained["probe"].items():
        np.testing.assert_array_equal(second.detector.feature_errors(windows, cid), snapshot["errors"][cid])
        np.testing.assert_array_equal(second.detector.score_samples(windows, cid), snapshot["scores"][cid])
        split = time_split(trained["sets"][cid], trained["mean_std"].training.validation_fraction)
        assert calibrate(second.detector, cid, split, trained["mean_std"]) == snapshot["thresholds"][cid]
    assert first.detector.history == second.detector.history


def test_add_compressor_changes_nothing_for_the_others(trained):
    first, snapshot, settings = trained["first"], trained["snapshot"], trained["mean_std"]
    model_dir = trained["dir"] / "models"
    save_bundle(first, model_dir)
    parent = load_bundle(model_dir, first.version)
    encoder_before = parent.detector.model.get_layer("encoder_lstm_1").get_weights()
    grown = add_compressor_to_bundle(parent, "C03", trained["sets"]["C03"], settings)
    assert grown.compressors == ["C01", "C02", "C03"]
    assert grown.detector.compressors == ["C01", "C02", "C03"]
    assert grown.extra["parent_version"] == first.version
    assert np.isfinite(grown.thresholds["C03"])
    for cid in ("C01", "C02"):
        assert grown.thresholds[cid] == snapshot["thresholds"][cid]
        windows = trained["probe"][cid]
        np.testing.assert_allclose(grown.detector.feature_errors(windows, cid), snapshot["errors"][cid], atol=1e-6, rtol=0)
        np.testing.assert_allclose(grown.detector.score_samples(windows, cid), snapshot["scores"][cid], atol=1e-6, rtol=1e-7)
    for old, new in zip(encoder_before, grown.detector.model.get_layer("encoder_lstm_1").get_weights()):
        np.testing.assert_array_equal(old, new)
    c03 = grown.detector.score_samples(trained["sets"]["C03"].windows[-200:], "C03")
    assert np.isfinite(c03).all()
    with pytest.raises(ValueError, match="'C01' already has a head"):
        grown.detector.add_compressor("C01", trained["sets"]["C01"], trained["sets"]["C01"])
