"""The weights file of an LSTM-autoencoder version: scoring from it needs no Keras and gives the scores of the
Keras model bit for bit; a version saved before it existed loads through model.keras; a corrupt, edited or
missing weights file is refused with ModelArtifactError."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelArtifactError
from models.artifacts import METADATA_FILE, METADATA_HASH_FILE, load_bundle, save_bundle, versions_dir
from models.weights import WEIGHTS_FILE, NetworkWeights

STEPS, FEATURES, HEADS = 5, 4, 2


def random_weights(heads: int = HEADS, features: int = FEATURES) -> NetworkWeights:
    """Arrays shaped as the autoencoder's (encoder 8 -> 6 -> code 3, heads 6 -> 8 -> features)."""
    rng = np.random.default_rng(1)

    def lstm(width: int, units: int):
        return tuple(rng.normal(size=s).astype(np.float32) for s in ((width, 4 * units), (units, 4 * units), (4 * units,)))

    def dense(width: int, units: int):
        return tuple(rng.normal(size=s).astype(np.float32) for s in ((width, units), (units,)))

    encoder = (lstm(features, 8), lstm(8, 6), dense(6, 3))
    return NetworkWeights(STEPS, encoder, tuple((lstm(3, 6), lstm(6, 8), dense(8, features)) for _ in range(heads)))


def saved_arrays(tmp_path, change) -> Path:
    """A weights file whose arrays (a dict name -> array) were edited by `change` before saving."""
    path = tmp_path / WEIGHTS_FILE
    random_weights().save(path)
    with np.load(path) as npz:
        arrays = dict(npz)
    change(arrays)
    np.savez(path, **arrays)
    return path


def test_saved_arrays_load_as_they_were(tmp_path):
    weights = random_weights()
    weights.save(tmp_path / WEIGHTS_FILE)
    loaded = NetworkWeights.load(tmp_path / WEIGHTS_FILE, STEPS, HEADS)
    assert loaded.steps == STEPS and loaded.n_features == FEATURES and len(loaded.heads) == HEADS
    for got, expected in zip(loaded._named().values(), weights._named().values(), strict=True):
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == np.float32


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("head_1_output/1"), "array head_1_output/1 is missing"),
        (lambda a: a.update({"head_2_lstm_1/0": a["head_1_lstm_1/0"]}), "unexpected array head_2_lstm_1/0"),
        (lambda a: a.update({"encoder_lstm_2/1": a["encoder_lstm_2/1"][:, :-1]}), "arrays of encoder_lstm_2 do not fit"),
        (lambda a: a.update({"head_0_output/0": np.zeros((8, FEATURES + 1), np.float32), "head_0_output/1": np.zeros(FEATURES + 1, np.float32)}), "head 0 does not reconstruct 4 features"),
        (lambda a: a.update({"encoder_code/0": a["encoder_code/0"].astype(np.float64)}), "encoder_code is not float32"),
        (lambda a: a.update({"encoder_code/1": np.array([object()] * 3)}), "unreadable: Object arrays cannot be loaded when allow_pickle=False"),
    ],
    ids=["missing", "extra head", "wrong shape", "wrong width", "float64", "pickled objects"],
)
def test_an_edited_weights_file_is_refused(tmp_path, change, message):
    with pytest.raises(ModelArtifactError, match=message):
        NetworkWeights.load(saved_arrays(tmp_path, change), STEPS, HEADS)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not a zip file", lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:]], ids=["truncated", "garbage", "one byte"])
def test_a_corrupt_weights_file_is_refused(tmp_path, damage):
    path = tmp_path / WEIGHTS_FILE
    random_weights().save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelArtifactError, match="weights.npz"):
        NetworkWeights.load(path, STEPS, HEADS)


def test_a_missing_weights_file_is_refused(tmp_path):
    with pytest.raises(ModelArtifactError, match="weights.npz is unreadable"):
        NetworkWeights.load(tmp_path / WEIGHTS_FILE, STEPS, HEADS)


# ------------------------------------------------------------- with a trained model (slow)
def _as_saved_before_the_weights_file(directory) -> None:
    """Make a version directory look as one saved before weights.npz existed (file gone, metadata rehashed)."""
    (directory / WEIGHTS_FILE).unlink()
    meta = json.loads((directory / METADATA_FILE).read_text())
    del meta["files"][WEIGHTS_FILE]
    encoded = json.dumps(meta).encode()
    (directory / METADATA_FILE).write_bytes(encoded)
    (directory / METADATA_HASH_FILE).write_text(hashlib.sha256(encoded).hexdigest())


@pytest.fixture
def model_dir(trained_fleet, tmp_path):
    target = tmp_path / "models"
    shutil.copytree(trained_fleet["settings"].model_dir, target)
    return target


def _probe(bundle) -> np.ndarray:
    return (np.random.default_rng(4).normal(size=(300, bundle.window, len(bundle.features))) * 2 + 1).astype(np.float32)


@pytest.mark.parametrize("path", ["numpy", "xla"])
def test_the_weights_file_scores_as_the_keras_model_and_an_old_version_loads(trained_fleet, model_dir, monkeypatch, path):
    from models import inference

    if path == "xla":
        monkeypatch.setattr(inference, "NUMPY_UP_TO", 0)
    version = trained_fleet["bundle"].version
    new = load_bundle(model_dir, version)
    assert new.detector._model is None, "scoring from the weights file builds no Keras model"
    assert sorted(p.name for p in (versions_dir(model_dir) / version).iterdir()) == sorted(["detector.json", "metadata.json", "metadata.sha256", "model.keras", WEIGHTS_FILE])
    _as_saved_before_the_weights_file(versions_dir(model_dir) / version)
    old = load_bundle(model_dir, version)
    assert old.detector._model is not None, "a version without the weights file loads through model.keras"
    windows = _probe(new)
    for cid in new.compressors:
        np.testing.assert_array_equal(new.detector.feature_errors(windows, cid), old.detector.feature_errors(windows, cid))
        np.testing.assert_array_equal(new.detector.anomaly_score(windows, cid), old.detector.anomaly_score(windows, cid))


def test_a_version_saved_from_the_weights_file_keeps_the_network(trained_fleet, model_dir):
    """calibrate saves a loaded, unchanged network: model.keras copied byte for byte, the same weights file, the same scores."""
    parent = load_bundle(model_dir, trained_fleet["bundle"].version)
    parent.version, parent.created_at = "", ""
    child_dir = save_bundle(parent, model_dir)
    parent_dir = versions_dir(model_dir) / trained_fleet["bundle"].version
    assert (child_dir / "model.keras").read_bytes() == (parent_dir / "model.keras").read_bytes()
    child = load_bundle(model_dir, child_dir.name)
    windows = _probe(child)
    np.testing.assert_array_equal(child.detector.feature_errors(windows, "C02"), trained_fleet["bundle"].detector.feature_errors(windows, "C02"))
    for a, b in zip(child.detector.model.get_weights(), trained_fleet["bundle"].detector.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the Keras model, loaded on first use, is the trained one


def test_a_damaged_weights_file_of_a_version_is_a_model_artifact_error(trained_fleet, model_dir):
    from models.lstm_ae import LSTMAutoencoderDetector

    directory = versions_dir(model_dir) / trained_fleet["bundle"].version
    data = bytearray((directory / WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (directory / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelArtifactError, match="file weights.npz does not match its SHA-256"):
        load_bundle(model_dir)
    with pytest.raises(ModelArtifactError, match="weights.npz"):
        LSTMAutoencoderDetector.load(directory)  # past the checksums: the file itself is refused
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelArtifactError, match="file weights.npz is missing"):
        load_bundle(model_dir)
