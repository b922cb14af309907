"""Every registered detector meets the Detector protocol (models/detector.py), with tiny real models.

Per detector: it is a Detector, the registry knows its class, fitted scores have the documented
shapes and are finite, obviously anomalous windows score above normal ones, save -> load scores
identically, adding a compressor leaves the other compressors' scores identical and the batch
size changes no score beyond float32 rounding.
"""
from __future__ import annotations

import numpy as np
import pytest

from core.errors import UnknownCompressorError
from core.settings import DETECTORS, with_section
from models.calibration import folds_of
from models.detector import Detector, ScoreDetails
from models.registry import REGISTRY, detector_kind
from models.training import make_detector
from pipeline.windows import build_windows
from tests.conftest import tiny_settings

FEATURES = ("a", "b", "c", "d")
WINDOW = 8
ROWS = 400
FOLDS = 3


def ar1_windows(seed: int, level: float = 0.0):
    """Windows over a mean-reverting random walk (AR(1), standard deviation about 2.3) of every signal, every 30 s."""
    rng = np.random.default_rng(seed)
    values = np.zeros((ROWS, len(FEATURES)))
    for i in range(1, ROWS):
        values[i] = 0.9 * values[i - 1] + rng.normal(size=len(FEATURES))
    times = np.datetime64("2024-01-01T00:00:00") + np.arange(ROWS) * np.timedelta64(30, "s")
    return build_windows(values + level, times, WINDOW, 45.0)


def split(ws):
    """The first 70 % of the windows to fit on, the rest held out (validation and normal statistics)."""
    cut = int(0.7 * len(ws))
    return ws.take(slice(0, cut)), ws.take(slice(cut, None))


def fit_new_compressor(detector: Detector, cid: str, ws) -> None:
    train, held_out = split(ws)
    detector.add_compressor(cid, train, held_out)
    detector.fit_normal(cid, folds_of(held_out, FOLDS))


@pytest.fixture(scope="module")
def sets():
    return {"C1": ar1_windows(1), "C2": ar1_windows(2, level=100.0)}


@pytest.fixture(scope="module", params=list(REGISTRY))
def fitted(request, sets, tmp_path_factory):
    """A detector of each registered kind, fitted and given its normal statistics as train_bundle does."""
    settings = tiny_settings(tmp_path_factory.mktemp(request.param), epochs=1, patience=1)
    settings = with_section(settings, "data", features=FEATURES, window=WINDOW)
    settings = with_section(settings, "detection", detector=request.param)
    detector = make_detector(settings)
    parts = {cid: split(ws) for cid, ws in sets.items()}
    detector.fit({cid: p[0] for cid, p in parts.items()}, {cid: p[1] for cid, p in parts.items()})
    held_out_scores = {cid: detector.fit_normal(cid, folds_of(p[1], FOLDS)) for cid, p in parts.items()}
    return {
        "name": request.param, "detector": detector, "training": settings.training,
        "held_out": {cid: p[1] for cid, p in parts.items()}, "held_out_scores": held_out_scores,
    }


def test_it_is_a_detector_and_the_registry_knows_it(fitted):
    detector, name = fitted["detector"], fitted["name"]
    assert isinstance(detector, Detector)
    assert detector.name == name and type(detector) is detector_kind(name).detector_class()
    assert (detector.features, detector.window, detector.compressors) == (FEATURES, WINDOW, ["C1", "C2"])


def test_the_registry_names_are_the_settings_choices():
    assert tuple(REGISTRY) == DETECTORS
    with pytest.raises(ValueError, match=r"unknown detector 'lof' \(choose from lstm_ae, iforest\)"):
        detector_kind("lof")


def test_the_protocol_checks_members():
    class Partial:
        name, features, window, compressors = "partial", FEATURES, WINDOW, []

    assert not isinstance(Partial(), Detector)


def test_scores_have_the_documented_shapes_and_are_finite(fitted, sets):
    detector = fitted["detector"]
    for cid, ws in sets.items():
        windows = ws.windows[::4]
        details = detector.anomaly_score_details(windows, cid)
        assert isinstance(details, ScoreDetails)
        assert details.score.shape == (len(windows),)
        assert details.feature_errors.shape == details.contributions.shape == (len(windows), len(FEATURES))
        assert all(np.isfinite(a).all() for a in details) and (details.feature_errors >= 0).all()
        np.testing.assert_array_equal(detector.anomaly_score(windows, cid), details.score)
        np.testing.assert_array_equal(detector.feature_errors(windows, cid), details.feature_errors)
        empty = detector.anomaly_score_details(windows[:0], cid)
        assert empty.score.shape == (0,) and empty.feature_errors.shape == (0, len(FEATURES))


def test_fit_normal_scores_every_held_out_window(fitted):
    for cid, scores in fitted["held_out_scores"].items():
        assert scores.shape == (len(fitted["held_out"][cid]),) and np.isfinite(scores).all()


def test_anomalous_windows_score_higher(fitted, sets):
    detector = fitted["detector"]
    normal = sets["C2"].windows[::4]
    shifted = normal + 25.0  # about 10 standard deviations on every signal
    assert detector.anomaly_score(shifted, "C2").min() > detector.anomaly_score(normal, "C2").max()
    # C2 runs 100 units above C1: against C1's model its normal windows are anomalous
    assert detector.anomaly_score(normal, "C1").min() > detector.anomaly_score(normal, "C2").max()


def test_unknown_compressor(fitted, sets):
    with pytest.raises(UnknownCompressorError, match="'C9' is not in the model.*known: C1, C2"):
        fitted["detector"].anomaly_score(sets["C1"].windows, "C9")


def test_save_load_add_compressor_and_batch_size(fitted, sets, tmp_path):
    detector = fitted["detector"]
    files = detector.save(tmp_path)
    assert sorted(files) == sorted(p.name for p in tmp_path.iterdir())
    loaded = type(detector).load(tmp_path, fitted["training"])
    assert isinstance(loaded, Detector)
    assert (loaded.name, loaded.features, loaded.window, loaded.compressors) == (detector.name, FEATURES, WINDOW, ["C1", "C2"])
    before = {}
    for cid, ws in sets.items():
        before[cid] = detector.anomaly_score_details(ws.windows, cid)
        for got, expected in zip(loaded.anomaly_score_details(ws.windows, cid), before[cid], strict=True):
            np.testing.assert_array_equal(got, expected)

    new = ar1_windows(3, level=-50.0)
    fit_new_compressor(loaded, "C3", new)  # the loaded copy grows; the fixture's detector is left as it was
    assert loaded.compressors == ["C1", "C2", "C3"]
    for cid, ws in sets.items():
        np.testing.assert_array_equal(loaded.anomaly_score(ws.windows, cid), before[cid].score)
    assert np.isfinite(loaded.anomaly_score(new.windows, "C3")).all()
    with pytest.raises(ValueError, match="already has"):
        loaded.add_compressor("C3", *split(new))

    loaded.set_batch_size(7)  # batches of 7 windows, the last one partial: the same scores to float32 rounding
    for cid, ws in sets.items():
        np.testing.assert_allclose(loaded.anomaly_score(ws.windows, cid), before[cid].score, rtol=1e-4)
    with pytest.raises(ValueError, match="batch size must be at least 1"):
        loaded.set_batch_size(0)
