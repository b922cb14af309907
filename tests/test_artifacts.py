"""Model versions on disk: round trip, SHA-256 checks, feature checks, listing and promotion."""
import json
import shutil

import numpy as np
import pytest

from core.errors import ModelArtifactError, UnknownCompressorError
from core.settings import with_section
from models.artifacts import (
    CURRENT_FILE,
    METADATA_FILE,
    current_version,
    list_versions,
    load_bundle,
    load_for_settings,
    promote,
    read_metadata,
    save_bundle,
    versions_dir,
)
from pipeline.windows import build_windows


@pytest.fixture
def model_dir(trained_fleet, tmp_path):
    """A private copy of the session model directory (one promoted version)."""
    target = tmp_path / "models"
    shutil.copytree(trained_fleet["settings"].model_dir, target)
    return target


@pytest.fixture(scope="module")
def windows(trained_fleet):
    settings = trained_fleet["settings"]
    tel = trained_fleet["fleet"].telemetry
    out = {}
    for cid, unit in tel.groupby("compressor_id"):
        ws = build_windows(unit[list(settings.data.features)].to_numpy(), unit.timestamp.to_numpy(), settings.data.window, settings.max_gap_s)
        out[cid] = ws.windows[-300:]
    return out


def flip_one_byte(path, position: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def test_round_trip_gives_identical_scores(trained_fleet, model_dir, windows):
    original = trained_fleet["bundle"]
    loaded = load_bundle(model_dir)
    assert loaded.version == original.version
    assert loaded.thresholds == original.thresholds
    assert loaded.features == original.features
    assert loaded.window == original.window
    assert loaded.compressors == original.compressors
    assert loaded.threshold_rule == original.threshold_rule
    assert loaded.alarm == original.alarm
    assert loaded.calibration == original.calibration and set(loaded.calibration) == set(original.thresholds)
    assert tuple(loaded.training_range) == tuple(original.training_range)
    for cid, w in windows.items():
        np.testing.assert_array_equal(loaded.detector.feature_errors(w, cid), original.detector.feature_errors(w, cid))
    np.testing.assert_array_equal(loaded.detector.score_samples(windows["C02"], "C02"), original.detector.score_samples(windows["C02"], "C02"))


def test_metadata_lists_every_file_with_its_hash(trained_fleet, model_dir):
    meta = read_metadata(model_dir, trained_fleet["bundle"].version)
    assert set(meta["files"]) == {"model.keras", "detector.json"}
    assert all(len(digest) == 64 for digest in meta["files"].values())
    assert meta["compressors"] == ["C01", "C02", "C03"]
    assert set(meta["thresholds"]) == {"C01", "C02", "C03"}


@pytest.mark.parametrize("name", ["model.keras", "detector.json"])
def test_a_modified_byte_is_refused_naming_the_file(trained_fleet, model_dir, name):
    version = trained_fleet["bundle"].version
    flip_one_byte(versions_dir(model_dir) / version / name)
    with pytest.raises(ModelArtifactError, match=f"file {name} does not match its SHA-256"):
        load_bundle(model_dir)
    with pytest.raises(ModelArtifactError, match=name):
        promote(model_dir, version)


def test_a_missing_file_is_refused_naming_it(trained_fleet, model_dir):
    (versions_dir(model_dir) / trained_fleet["bundle"].version / "detector.json").unlink()
    with pytest.raises(ModelArtifactError, match="file detector.json is missing"):
        load_bundle(model_dir)


def test_feature_list_must_match_the_configuration(trained_fleet, model_dir):
    settings = trained_fleet["settings"]
    reordered = tuple(reversed(settings.data.features))
    with pytest.raises(ModelArtifactError, match="was trained on features .* but the configuration lists"):
        load_bundle(model_dir, expected_features=reordered)
    fewer = settings.data.features[:-1]
    with pytest.raises(ModelArtifactError, match="configuration lists"):
        load_for_settings(with_section(settings.replace(model_dir=model_dir), "data", features=fewer))


def test_unknown_detector_in_metadata(trained_fleet, model_dir):
    version = trained_fleet["bundle"].version
    path = versions_dir(model_dir) / version / METADATA_FILE
    meta = json.loads(path.read_text())
    meta["detector"] = "mystery"
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match="unknown detector 'mystery'"):
        load_bundle(model_dir)


def test_versions_list_promote_and_current(trained_fleet, model_dir):
    first = trained_fleet["bundle"].version
    assert current_version(model_dir) == first
    bundle = load_bundle(model_dir)
    bundle.version, bundle.created_at = "", ""
    bundle.extra = {"note": "second"}
    save_bundle(bundle, model_dir)
    second = bundle.version
    assert second > first
    assert current_version(model_dir) == first  # saving does not promote
    (versions_dir(model_dir) / "broken").mkdir()
    listed = list_versions(model_dir)
    assert [m["version"] for m in listed] == sorted([first, second, "broken"])
    assert "not found" in next(m for m in listed if m["version"] == "broken")["error"]
    assert next(m for m in listed if m["version"] == second)["extra"] == {"note": "second"}
    promote(model_dir, second)
    assert current_version(model_dir) == second
    assert load_bundle(model_dir).version == second
    assert load_bundle(model_dir, first).version == first
    with pytest.raises(ModelArtifactError, match="model version 'nope' not found"):
        promote(model_dir, "nope")
    assert current_version(model_dir) == second  # a failed promotion changes nothing
    assert not list(model_dir.glob("*.tmp"))


def test_saving_an_existing_version_is_refused(trained_fleet, model_dir):
    bundle = load_bundle(model_dir)
    with pytest.raises(ModelArtifactError, match="already exists"):
        save_bundle(bundle, model_dir)
    assert not [p for p in versions_dir(model_dir).iterdir() if p.name.startswith(".staging")]


def test_no_promoted_version(tmp_path, model_dir):
    (model_dir / CURRENT_FILE).unlink()
    with pytest.raises(ModelArtifactError, match="no model promoted in .*: run `train` first"):
        current_version(model_dir)
    with pytest.raises(ModelArtifactError, match="no model promoted"):
        load_bundle(model_dir)
    (model_dir / CURRENT_FILE).write_text("{not json")
    with pytest.raises(ModelArtifactError, match="current.json is unreadable"):
        current_version(model_dir)
    assert list_versions(tmp_path / "empty") == []


def test_threshold_for_an_unknown_compressor(trained_fleet):
    with pytest.raises(UnknownCompressorError, match="'C77' is not in model .*add it with `train --add-compressor`"):
        trained_fleet["bundle"].threshold_for("C77")
