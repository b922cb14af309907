"""Model versions on disk: round trip, SHA-256 checks, feature checks, listing and promotion, tampering."""
import hashlib
import json
import shutil

import numpy as np
import pytest

from core.errors import ModelArtifactError, UnknownCompressorError
from core.settings import with_section
from models.artifacts import (
    CURRENT_FILE,
    METADATA_FILE,
    METADATA_HASH_FILE,
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


def rewrite_metadata(directory, change, rehash: bool = True) -> None:
    """Edit a version's metadata.json with `change(meta)`; rehash=True also rewrites metadata.sha256 to match."""
    meta = json.loads((directory / METADATA_FILE).read_text())
    change(meta)
    encoded = json.dumps(meta).encode()
    (directory / METADATA_FILE).write_bytes(encoded)
    if rehash:
        (directory / METADATA_HASH_FILE).write_text(hashlib.sha256(encoded).hexdigest())


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
    np.testing.assert_array_equal(loaded.detector.anomaly_score(windows["C02"], "C02"), original.detector.anomaly_score(windows["C02"], "C02"))


def test_metadata_lists_every_file_with_its_hash(trained_fleet, model_dir):
    meta = read_metadata(model_dir, trained_fleet["bundle"].version)
    assert set(meta["files"]) == {"model.keras", "weights.npz", "detector.json"}
    assert all(len(digest) == 64 for digest in meta["files"].values())
    assert meta["compressors"] == ["C01", "C02", "C03"]
    assert set(meta["thresholds"]) == {"C01", "C02", "C03"}


@pytest.mark.parametrize("name", ["model.keras", "weights.npz", "detector.json"])
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
    rewrite_metadata(versions_dir(model_dir) / version, lambda meta: meta.update(detector="mystery"))
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


# ------------------------------------------------------------------ tampering (each a class of edit)
EDITS = {
    "a threshold": lambda meta: meta["thresholds"].update(C01=1e9),
    "the trigger": lambda meta: meta.update(consecutive_trigger=10**6),
    "the features": lambda meta: meta.update(features=list(reversed(meta["features"]))),
    "the files key removed": lambda meta: meta.pop("files"),
    "another version named": lambda meta: meta.update(version="20000101T000000000000Z"),
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_metadata_file_is_refused(trained_fleet, model_dir, edit):
    version = trained_fleet["bundle"].version
    rewrite_metadata(versions_dir(model_dir) / version, EDITS[edit], rehash=False)
    for action in (lambda: load_bundle(model_dir), lambda: promote(model_dir, version)):
        with pytest.raises(ModelArtifactError, match=f"model version {version}: metadata.json does not match its SHA-256 in metadata.sha256"):
            action()
    assert "UNREADABLE" not in str(list_versions(model_dir)) and "edited or corrupt" in list_versions(model_dir)[0]["error"]


def test_a_deleted_metadata_hash_is_refused(trained_fleet, model_dir):
    version = trained_fleet["bundle"].version
    (versions_dir(model_dir) / version / METADATA_HASH_FILE).unlink()
    with pytest.raises(ModelArtifactError, match="metadata.sha256 is missing"):
        load_bundle(model_dir)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda meta: meta.pop("files"), "lists no file hashes"),
        (lambda meta: meta.update(files={}), "lists no file hashes"),
        (lambda meta: meta.update(version="20000101T000000000000Z"), "names version '20000101T000000000000Z', not its own directory"),
        (lambda meta: meta.update(version="../../ext"), "names version '../../ext', not its own directory"),
        (lambda meta: meta["files"].pop("detector.json"), "detector.json is not listed in metadata.json"),
        (lambda meta: meta["files"].update({"../current.json": meta["files"]["detector.json"]}), r"file ../current.json is missing"),
    ],
)
def test_consistent_but_wrong_metadata_is_refused(trained_fleet, model_dir, edit, message):
    """Even with its hash rewritten to match, metadata must name its own directory and cover every file."""
    rewrite_metadata(versions_dir(model_dir) / trained_fleet["bundle"].version, edit)
    with pytest.raises(ModelArtifactError, match=message):
        load_bundle(model_dir)


def test_an_extra_file_in_a_version_is_refused(trained_fleet, model_dir):
    (versions_dir(model_dir) / trained_fleet["bundle"].version / "extra.keras").write_bytes(b"x")
    with pytest.raises(ModelArtifactError, match="extra.keras is not listed"):
        load_bundle(model_dir)


@pytest.mark.parametrize("name", ["../../ext", "..", ".", "a/b", "", "x" * 65, "v\nERROR forged", "/etc", "v 1", "C:\\x"])
def test_invalid_version_names_are_refused_everywhere(model_dir, name):
    for action in (lambda: promote(model_dir, name), lambda: load_bundle(model_dir, name), lambda: read_metadata(model_dir, name)):
        with pytest.raises(ModelArtifactError, match="invalid model version name"):
            action()
    (model_dir / CURRENT_FILE).write_text(json.dumps({"version": name}))
    with pytest.raises(ModelArtifactError, match="invalid model version name"):
        current_version(model_dir)


def test_a_version_linked_outside_the_model_directory_is_refused(trained_fleet, model_dir, tmp_path):
    """A complete, self-consistent version outside MODEL_DIR, reached through a link, is not loaded."""
    version = trained_fleet["bundle"].version
    outside = tmp_path / "ext" / "evil"
    shutil.copytree(versions_dir(model_dir) / version, outside)
    rewrite_metadata(outside, lambda meta: meta.update(version="evil"))
    (versions_dir(model_dir) / "evil").symlink_to(outside, target_is_directory=True)
    for action in (lambda: load_bundle(model_dir, "evil"), lambda: promote(model_dir, "evil")):
        with pytest.raises(ModelArtifactError, match="outside"):
            action()
    assert current_version(model_dir) == version


def test_cli_promote_outside_the_model_directory_changes_nothing(trained_fleet, model_dir, capsys):
    from scheduler.cli import main

    version = trained_fleet["bundle"].version
    assert main(["--model-dir", str(model_dir), "models", "promote", "../../ext"]) == 1
    assert capsys.readouterr().err.strip().endswith("invalid model version name '../../ext': 1 to 64 letters, digits, '_' or '-' (e.g. 20260101T000000000000Z)")
    assert current_version(model_dir) == version
