"""Training: the held-out split, per-compressor thresholds under each rule, seeding, adding a compressor,
recalibrating on a later period with the weights kept."""
import dataclasses
import logging
from datetime import datetime

import numpy as np
import pytest

from core.errors import CalibrationError
from core.settings import SettingsError, with_section
from models.artifacts import load_bundle, save_bundle
from models.calibration import folds_of, split_normal
from models.thresholds import false_alarm_rate_threshold, mean_std_threshold
from models.training import add_compressor_to_bundle, make_detector, recalibrate_bundle, train_bundle
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


# --------------------------------------------------------------- held-out split
def test_split_holds_out_spread_blocks_and_shares_no_rows():
    n_rows, window = 2000, 10
    spacing = np.full(n_rows - 1, 30)
    spacing[700] = 600  # one gap
    times = T0 + np.r_[0, np.cumsum(spacing)].astype(np.int64) * np.timedelta64(1, "s")
    ws = build_windows(np.zeros((n_rows, 2)), times, window, 45.0)
    split = split_normal(ws, 0.3, window)
    fit_rows = {int(i) + k for i in split.fit.index for k in range(window)}
    held_rows = {int(i) + k for i in split.calibration.index for k in range(window)}
    assert not fit_rows & held_rows
    assert 0.25 < len(split.calibration) / len(ws) < 0.35
    # the held-out windows are spread over the period: early, middle and late parts
    position = np.searchsorted(ws.index, split.calibration.index) / len(ws)
    assert position.min() < 0.3 and position.max() > 0.7 and ((position > 0.4) & (position < 0.6)).any()
    for part in (split.fit, split.calibration):
        assert np.all(np.diff(part.end_times) > np.timedelta64(0, "s"))
        assert part.breaks[0]
    # every boundary between roles is a break, so no alarm run spans two held-out blocks
    jumps = np.flatnonzero(np.diff(split.calibration.index) != 1) + 1
    assert split.calibration.breaks[jumps].all()
    folds = folds_of(split.calibration, 5)
    assert len(folds) == 5 and sum(map(len, folds)) == len(split.calibration)
    np.testing.assert_array_equal(np.concatenate([f.index for f in folds]), split.calibration.index)


def test_split_of_an_empty_set():
    ws = build_windows(np.zeros((3, 2)), T0 + np.arange(3) * np.timedelta64(30, "s"), 10, 45.0)
    split = split_normal(ws, 0.3, 10)
    assert len(split.fit) == len(split.calibration) == 0


def test_too_few_windows_is_a_clear_error(tmp_path, caplog):
    settings = small_settings(tmp_path)
    tiny = build_windows(np.zeros((15, len(FEATURES))), T0 + np.arange(15) * np.timedelta64(30, "s"), WINDOW, 45.0)
    with caplog.at_level(logging.WARNING), pytest.raises(CalibrationError, match="no compressor has enough normal windows"):
        train_bundle({"C09": tiny}, settings, (None, None))
    assert "compressor C09: only 8 normal windows, skipped from training" in caplog.text


def test_unknown_detector(tmp_path):
    settings = small_settings(tmp_path)
    with pytest.raises(SettingsError, match=r"\[detection\] detector must be one of"):
        with_section(settings, "detection", detector="nope")
    unchecked = settings.replace(detection=dataclasses.replace(settings.detection, detector="nope"))
    with pytest.raises(ValueError, match=r"unknown detector 'nope' \(choose from lstm_ae, iforest\)"):
        make_detector(unchecked)


def test_a_fleet_of_many_heads_trains_without_tensorflows_retracing_warning(tmp_path, caplog):
    """One compiled step per head is intended: TensorFlow's retracing heuristic must not reach the operator's log."""
    fleet = simulate_fleet(6, 0.25, start=datetime(2026, 1, 1), seed=4, features=FEATURES, fault_free_days=1.0)
    settings = with_section(small_settings(tmp_path), "training", epochs=1)
    with caplog.at_level(logging.WARNING):
        bundle = train_bundle(windows_of(fleet.telemetry, settings), settings, (None, None))
    assert len(bundle.thresholds) == 6
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


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
        "scores": {cid: first.detector.anomaly_score(w, cid) for cid, w in probe.items()},
        "thresholds": dict(first.thresholds),
    }
    second = train_bundle(base, budget, (None, None))
    return {"sets": sets, "mean_std": mean_std, "budget": budget, "first": first, "second": second, "probe": probe, "snapshot": snapshot, "dir": tmp}


def fresh_copy(trained):
    """A copy of the first bundle to recalibrate (calibration refits the detector's statistics in place)."""
    model_dir = trained["dir"] / "copies"
    if not (model_dir / "versions" / trained["first"].version).is_dir():
        save_bundle(trained["first"], model_dir)
    return load_bundle(model_dir, trained["first"].version)


def held_out(trained, cid, settings):
    return split_normal(trained["sets"][cid], settings.training.calibration_fraction, settings.data.window).calibration


def out_of_fold(bundle, trained, cid, settings):
    """The out-of-fold scores calibration used (fit_normal refits the same statistics: deterministic)."""
    return bundle.detector.fit_normal(cid, folds_of(held_out(trained, cid, settings), settings.training.calibration_folds))


def test_mean_std_thresholds_come_from_out_of_fold_held_out_scores(trained):
    bundle, settings = trained["first"], trained["mean_std"]
    assert bundle.threshold_rule == "mean_std"
    assert sorted(bundle.thresholds) == ["C01", "C02"]
    for cid, threshold in bundle.thresholds.items():
        scores = out_of_fold(bundle, trained, cid, settings)
        assert len(scores) == len(held_out(trained, cid, settings))
        assert threshold == pytest.approx(mean_std_threshold(scores, settings.detection.threshold_k), rel=1e-9)
        record = bundle.calibration[cid]
        assert record["windows"] == len(scores) and record["rule"] == "mean_std" and record["target_rate"] is None
        assert record["held_out_rate"] == pytest.approx(np.mean(scores > threshold))


def test_out_of_fold_scores_are_not_in_sample(trained):
    """Each fold is scored by statistics fitted without it: on held-out data the scores are larger
    than the in-sample scores of the same windows."""
    bundle, settings = trained["first"], trained["mean_std"]
    for cid in bundle.thresholds:
        oof = out_of_fold(bundle, trained, cid, settings)
        in_sample = bundle.detector.anomaly_score(held_out(trained, cid, settings).windows, cid)
        assert oof.mean() > in_sample.mean()


def test_false_alarm_rate_threshold_and_its_record(trained):
    from models.calibration import calibrate_compressor

    bundle, settings = fresh_copy(trained), with_section(trained["mean_std"], "detection", threshold_rule="false_alarm_rate")
    rate = settings.detection.false_alarm_rate
    for cid in bundle.thresholds:
        record = calibrate_compressor(bundle.detector, cid, held_out(trained, cid, settings), settings, bundle.alarm)
        scores = out_of_fold(bundle, trained, cid, settings)
        assert record.threshold == false_alarm_rate_threshold(scores, rate)
        assert record.target_rate == rate and record.held_out_rate <= rate
        assert record.start < record.end


def test_alarm_budget_thresholds_keep_the_held_out_series_within_budget(trained):
    bundle, settings = trained["second"], trained["budget"]
    assert bundle.threshold_rule == "alarm_budget"
    for cid, threshold in bundle.thresholds.items():
        part = held_out(trained, cid, settings)
        hours = len(part) * settings.data.sampling_interval_s / 3600
        scores = out_of_fold(bundle, trained, cid, settings)
        assert bundle.alarm.count_episodes(scores, threshold, part.breaks) <= settings.detection.alarm_budget_per_hour * hours


def test_too_little_held_out_data_is_an_error_that_says_how_much_more(trained, caplog):
    from models.calibration import calibrate_compressor

    bundle, settings = fresh_copy(trained), with_section(trained["mean_std"], "detection", threshold_rule="false_alarm_rate")
    part = held_out(trained, "C01", settings)
    with pytest.raises(CalibrationError, match=r"compressor C01: 12 held-out normal windows; .* at least 49 \(37 more, about 18 minutes"):
        calibrate_compressor(bundle.detector, "C01", part.take(slice(0, 12)), settings, bundle.alarm)
    with caplog.at_level(logging.WARNING):
        record = calibrate_compressor(bundle.detector, "C01", part.take(slice(0, 30)), settings, bundle.alarm)
    assert "30 held-out normal windows" in caplog.text and "the threshold is the largest held-out score" in caplog.text
    assert record.windows == 30


def test_same_seed_same_model(trained):
    """The threshold rule only changes calibration, so both trainings must fit identical weights."""
    first, second, snapshot = trained["first"], trained["second"], trained["snapshot"]
    for a, b in zip(snapshot["weights"], second.detector.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for cid, windows in trained["probe"].items():
        np.testing.assert_array_equal(second.detector.feature_errors(windows, cid), snapshot["errors"][cid])
        np.testing.assert_array_equal(second.detector.anomaly_score(windows, cid), snapshot["scores"][cid])
    assert first.detector.history == second.detector.history


def test_recalibrate_keeps_the_weights_and_the_other_compressors(trained):
    settings = trained["mean_std"]
    parent = fresh_copy(trained)
    weights = [w.copy() for w in parent.detector.model.get_weights()]
    later = trained["sets"]["C02"].take(slice(-600, None))
    far = with_section(settings, "detection", threshold_rule="false_alarm_rate")
    child = recalibrate_bundle(parent, {"C02": later}, far, ("2026-01-01T07:00:00", "2026-01-01T12:00:00"))
    for a, b in zip(weights, child.detector.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert child.extra["parent_version"] == parent.version
    assert child.extra["calibration_period"] == ["2026-01-01T07:00:00", "2026-01-01T12:00:00"]
    assert child.thresholds["C01"] == parent.thresholds["C01"] and child.calibration["C01"] == parent.calibration["C01"]
    np.testing.assert_array_equal(child.detector.anomaly_score(trained["probe"]["C01"], "C01"), trained["snapshot"]["scores"]["C01"])
    assert child.calibration["C02"]["windows"] == 600 and child.calibration["C02"]["rule"] == "false_alarm_rate"
    with pytest.raises(CalibrationError, match="C77 are not in model"):
        recalibrate_bundle(parent, {"C77": later}, far, ("a", "b"))


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
        np.testing.assert_allclose(grown.detector.anomaly_score(windows, cid), snapshot["scores"][cid], atol=1e-6, rtol=1e-7)
    for old, new in zip(encoder_before, grown.detector.model.get_layer("encoder_lstm_1").get_weights()):
        np.testing.assert_array_equal(old, new)
    c03 = grown.detector.anomaly_score(trained["sets"]["C03"].windows[-200:], "C03")
    assert np.isfinite(c03).all()
    with pytest.raises(ValueError, match="'C01' already has a head"):
        grown.detector.add_compressor("C01", trained["sets"]["C01"], trained["sets"]["C01"])
