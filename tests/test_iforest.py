"""The isolation-forest baseline detector: scoring, persistence without pickles, per-compressor forests."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from core.errors import ModelArtifactError, UnknownCompressorError
from core.settings import Settings, TrainingSettings, with_section
from models.alarms import AlarmRule
from models.artifacts import ModelBundle, load_bundle, save_bundle
from models.iforest import TREES_FILE, IsolationForestDetector, IsolationTrees, rolling_features
from models.training import train_bundle
from pipeline.windows import build_windows

FEATURES = ("a", "b", "c", "d")
WINDOW = 10
INTERVAL_S = 30.0


def windows_of(seed: int, rows: int = 600, level: float = 0.0):
    """Windows over a mean-reverting random walk (AR(1)) of every signal, sampled every 30 s."""
    rng = np.random.default_rng(seed)
    values = np.zeros((rows, len(FEATURES)))
    for i in range(1, rows):
        values[i] = 0.9 * values[i - 1] + rng.normal(size=len(FEATURES))
    times = np.datetime64("2024-01-01T00:00:00") + np.arange(rows) * np.timedelta64(30, "s")
    return build_windows(values + level, times, WINDOW, 1.5 * INTERVAL_S)


@pytest.fixture(scope="module")
def sets():
    return {"C1": windows_of(1), "C2": windows_of(2, level=100.0)}


@pytest.fixture(scope="module")
def detector(sets):
    return IsolationForestDetector(FEATURES, WINDOW, TrainingSettings(seed=7)).fit(sets, {})


def test_rolling_features_by_hand():
    windows = np.array([[[1.0], [3.0], [2.0], [6.0]]], dtype=np.float32)  # one window, one signal
    stats = rolling_features(windows)[0, 0]
    np.testing.assert_allclose(stats, [3.0, np.std([1, 3, 2, 6]), 1.0, 6.0, 6.0, 4.0])


@pytest.mark.parametrize("n_train", [5, 60, 1000])
def test_numpy_scores_equal_sklearn(n_train):
    rng = np.random.default_rng(n_train)
    x = rng.normal(size=(n_train, 6)).astype(np.float32)
    forest = IsolationForest(n_estimators=50, random_state=0).fit(x)
    trees = IsolationTrees.from_sklearn(forest)
    probe = np.concatenate([x, 3 * rng.normal(size=(500, 6)).astype(np.float32)])
    np.testing.assert_allclose(trees.score(probe), -forest.score_samples(probe), rtol=1e-12)


def test_shapes_and_range(detector, sets):
    windows = sets["C1"].windows
    scores = detector.anomaly_score(windows, "C1")
    errors = detector.feature_errors(windows, "C1")
    assert scores.shape == (len(windows),) and errors.shape == (len(windows), len(FEATURES))
    assert np.all((scores > 0) & (scores <= 1)) and np.all(errors >= 0)
    assert detector.compressors == ["C1", "C2"]
    assert detector.anomaly_score(windows[:0], "C1").shape == (0,)
    assert detector.feature_errors(windows[:0], "C1").shape == (0, len(FEATURES))


def test_level_shift_scores_higher_and_names_the_signal(detector, sets):
    normal = sets["C2"].windows[::5]
    shifted = normal.copy()
    shifted[:, :, 2] += 15.0  # about 6 standard deviations of the AR(1) signal
    normal_scores = detector.anomaly_score(normal, "C2")
    shifted_scores = detector.anomaly_score(shifted, "C2")
    assert np.all(shifted_scores > normal_scores)  # every window scores higher once shifted
    # and the shifted windows rank above the normal ones (pairwise AUROC); one signal of four moves
    # only a quarter of the forest's features, so the two score ranges overlap a little
    assert (shifted_scores[:, None] > normal_scores[None, :]).mean() > 0.9
    assert np.all(detector.feature_errors(shifted, "C2").argmax(axis=1) == 2)


def test_per_compressor_baselines(detector, sets):
    # C2 runs 100 units higher: its normal windows are far outside C1's baseline
    c2_windows = sets["C2"].windows[::5]
    assert detector.anomaly_score(c2_windows, "C1").min() > detector.anomaly_score(c2_windows, "C2").max()


def test_same_seed_same_scores_other_seed_differs(sets, detector):
    windows = sets["C1"].windows
    again = IsolationForestDetector(FEATURES, WINDOW, TrainingSettings(seed=7)).fit(sets, {})
    other = IsolationForestDetector(FEATURES, WINDOW, TrainingSettings(seed=8)).fit(sets, {})
    np.testing.assert_array_equal(again.anomaly_score(windows, "C1"), detector.anomaly_score(windows, "C1"))
    assert not np.array_equal(other.anomaly_score(windows, "C1"), detector.anomaly_score(windows, "C1"))


def test_unknown_compressor(detector, sets):
    with pytest.raises(UnknownCompressorError, match="'C9' is not in the model.*known: C1, C2"):
        detector.anomaly_score(sets["C1"].windows, "C9")
    with pytest.raises(UnknownCompressorError):
        detector.feature_errors(sets["C1"].windows, "C9")


def test_wrong_window_shape(detector, sets):
    with pytest.raises(ValueError, match="expected windows of shape"):
        detector.anomaly_score(sets["C1"].windows[:, :, :3], "C1")


def test_add_compressor_leaves_others_untouched(sets):
    detector = IsolationForestDetector(FEATURES, WINDOW, TrainingSettings(seed=7)).fit(sets, {})
    before = {cid: detector.anomaly_score(ws.windows, cid) for cid, ws in sets.items()}
    new = windows_of(3, level=-50.0)
    detector.add_compressor("C3", new, new)
    assert detector.compressors == ["C1", "C2", "C3"]
    for cid, ws in sets.items():
        np.testing.assert_array_equal(detector.anomaly_score(ws.windows, cid), before[cid])
    assert detector.anomaly_score(new.windows, "C3").shape == (len(new),)
    with pytest.raises(ValueError, match="already has a forest"):
        detector.add_compressor("C3", new, new)


def test_save_load_round_trip(detector, sets, tmp_path):
    files = detector.save(tmp_path)
    assert sorted(files) == sorted(p.name for p in tmp_path.iterdir())
    loaded = IsolationForestDetector.load(tmp_path)
    assert (loaded.features, loaded.window, loaded.compressors) == (FEATURES, WINDOW, ["C1", "C2"])
    for cid, ws in sets.items():
        np.testing.assert_array_equal(loaded.anomaly_score(ws.windows, cid), detector.anomaly_score(ws.windows, cid))
        np.testing.assert_array_equal(loaded.feature_errors(ws.windows, cid), detector.feature_errors(ws.windows, cid))


def test_load_rejects_corrupt_or_pickled_files(detector, tmp_path):
    detector.save(tmp_path)
    (tmp_path / TREES_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ModelArtifactError, match="cannot load the isolation forest"):
        IsolationForestDetector.load(tmp_path)

    arrays = {f"c0_{k}": np.array([object()]) for k in IsolationTrees.ARRAYS}  # needs a pickle to read
    np.savez(tmp_path / TREES_FILE, **arrays)
    with pytest.raises(ModelArtifactError):
        IsolationForestDetector.load(tmp_path)

    (tmp_path / TREES_FILE).unlink()
    with pytest.raises(ModelArtifactError):
        IsolationForestDetector.load(tmp_path)


def test_load_rejects_out_of_range_nodes(detector, tmp_path):
    detector.save(tmp_path)
    with np.load(tmp_path / TREES_FILE) as npz:
        arrays = dict(npz)
    arrays["c0_left"] = arrays["c0_left"] + len(arrays["c0_left"])
    np.savez(tmp_path / TREES_FILE, **arrays)
    with pytest.raises(ModelArtifactError, match="out-of-range"):
        IsolationForestDetector.load(tmp_path)


def test_bundle_round_trip(detector, sets, tmp_path):
    bundle = ModelBundle(detector, {"C1": 0.6, "C2": 0.61}, "mean_std", AlarmRule("consecutive", 3))
    save_bundle(bundle, tmp_path)
    loaded = load_bundle(tmp_path, bundle.version, expected_features=FEATURES)
    assert isinstance(loaded.detector, IsolationForestDetector)
    assert loaded.thresholds == {"C1": 0.6, "C2": 0.61}
    windows = sets["C2"].windows
    np.testing.assert_array_equal(loaded.detector.anomaly_score(windows, "C2"), detector.anomaly_score(windows, "C2"))


def test_train_bundle_with_iforest(sets):
    settings = with_section(Settings(), "data", features=FEATURES, window=WINDOW)
    settings = with_section(settings, "detection", detector="iforest")
    bundle = train_bundle(dict(sets), settings, (None, None))
    assert isinstance(bundle.detector, IsolationForestDetector)
    assert set(bundle.thresholds) == {"C1", "C2"} and all(0 < t < 1 for t in bundle.thresholds.values())
