"""The routed autoencoder: shapes, serialisable router, head-wise fast path, growth, safe save/load."""
import json

import numpy as np
import pytest

from models.autoencoder import (
    CODE_SIZE,
    CompressorRouter,
    build_autoencoder,
    freeze_all_but_head,
    grow_autoencoder,
    head_layer_names,
    keras,
    n_heads_of,
)
from models import inference
from models.inference import HeadwiseReconstructor
from models.weights import NetworkWeights

HEADS, WINDOW, FEATURES = 3, 6, 4


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return build_autoencoder(HEADS, WINDOW, FEATURES)


@pytest.fixture(scope="module")
def windows():
    return np.random.default_rng(0).normal(size=(37, WINDOW, FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def fast(model):
    """One fast path for every head (batch 16 with 37 windows: two full batches and a padded one)."""
    return HeadwiseReconstructor(NetworkWeights.from_model(model), batch_size=16)


def routed_errors(model, windows, head: int) -> np.ndarray:
    """Per-feature mean squared errors through the whole routed model."""
    heads = np.full(len(windows), head, dtype=np.int32)
    reconstruction = np.asarray(model([windows, heads], training=False))
    return ((reconstruction - windows) ** 2).mean(axis=1)


def test_shapes_and_layers(model, windows):
    assert n_heads_of(model) == HEADS
    assert [tuple(t.shape) for t in model.inputs] == [(None, WINDOW, FEATURES), (None,)]
    assert tuple(model.output.shape) == (None, WINDOW, FEATURES)
    assert model.get_layer("encoder_code").output.shape[-1] == CODE_SIZE
    for head in range(HEADS):
        for name in head_layer_names(head):
            model.get_layer(name)  # raises if absent
    reconstruction = model([windows[:5], np.array([0, 1, 2, 1, 0], np.int32)])
    assert tuple(reconstruction.shape) == (5, WINDOW, FEATURES)


def test_no_lambda_layer(model):
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    assert '"Lambda"' not in model.to_json()


def test_router_config_round_trip():
    router = CompressorRouter(5, name="router")
    config = router.get_config()
    assert config["n_heads"] == 5
    clone = CompressorRouter.from_config(json.loads(json.dumps(config)))
    assert clone.n_heads == 5 and clone.name == "router"
    restored = keras.layers.deserialize(keras.layers.serialize(router))
    assert isinstance(restored, CompressorRouter) and restored.n_heads == 5


def test_router_picks_the_head_of_each_window():
    heads = [np.full((4, 2, 3), float(h), np.float32) for h in range(3)]
    index = np.array([2, 0, 1, 2], np.int32)
    out = np.asarray(CompressorRouter(3)([*heads, index]))
    np.testing.assert_array_equal(out[:, 0, 0], [2.0, 0.0, 1.0, 2.0])


def test_heads_differ(model, windows):
    assert not np.allclose(routed_errors(model, windows, 0), routed_errors(model, windows, 1))


@pytest.mark.parametrize("head", range(HEADS))
def test_headwise_fast_path_matches_the_routed_model(model, fast, windows, head):
    errors = fast.feature_errors(windows, head)
    assert errors.shape == (len(windows), FEATURES)
    np.testing.assert_allclose(errors, routed_errors(model, windows, head), atol=1e-4, rtol=1e-4)


def test_parallel_batches_give_the_same_errors_as_one_thread(model, windows, monkeypatch):
    """XLA batches scored side by side on several threads land in their own rows, bit for bit."""
    monkeypatch.setattr(inference, "NUMPY_UP_TO", 0)
    one_thread = HeadwiseReconstructor(NetworkWeights.from_model(model), batch_size=8, workers=1).feature_errors(windows, 1)
    three_threads = HeadwiseReconstructor(NetworkWeights.from_model(model), batch_size=8, workers=3).feature_errors(windows, 1)
    np.testing.assert_array_equal(three_threads, one_thread)
    np.testing.assert_allclose(three_threads, routed_errors(model, windows, 1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("head", range(HEADS))
@pytest.mark.parametrize(("n", "numpy_batch", "xla_batch"), [(1, 256, 16), (37, 8, 16), (37, 256, 8), (100, 32, 512)])
def test_numpy_gives_the_numbers_of_the_xla_graph_to_float32_round_off(model, head, n, numpy_batch, xla_batch, monkeypatch):
    """Hourly calls score in NumPy, backfills in XLA: a window scores the same (relative 1e-5) in either, however the calls are batched."""
    weights = NetworkWeights.from_model(model)
    rng = np.random.default_rng(head)
    raw = (rng.normal(size=(n, WINDOW, FEATURES)) * 3 + 10).astype(np.float32)
    mean, std = np.full(FEATURES, 10, np.float32), np.full(FEATURES, 3, np.float32)
    monkeypatch.setattr(inference, "NUMPY_BATCH", numpy_batch)
    in_numpy = HeadwiseReconstructor(weights, batch_size=xla_batch).feature_errors(raw, head, mean, std)
    monkeypatch.setattr(inference, "NUMPY_UP_TO", 0)
    in_xla = HeadwiseReconstructor(weights, batch_size=xla_batch, workers=3).feature_errors(raw, head, mean, std)
    assert in_numpy.dtype == np.float32 and in_numpy.shape == (n, FEATURES)
    np.testing.assert_allclose(in_numpy, in_xla, rtol=1e-5, atol=1e-7)


def test_numpy_up_to_zero_sends_every_call_through_the_compiled_graph(model, windows, fast):
    compiled = HeadwiseReconstructor(NetworkWeights.from_model(model), batch_size=16, numpy_up_to=0)
    got = compiled.feature_errors(windows[:5], 1)
    assert compiled._xla is not None and fast.numpy_up_to == inference.NUMPY_UP_TO
    np.testing.assert_allclose(got, fast.feature_errors(windows[:5], 1), rtol=1e-5, atol=1e-7)


def test_numpy_sigmoid_is_stable_at_large_inputs():
    x = np.array([-1000, -80, -1, 0, 1, 80, 1000], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # exp(-1000) underflows to 0, as it should
        y = inference._sigmoid(x)
    with np.errstate(over="ignore"):  # the float64 reference: exp(1000) is inf, 1 / inf is 0
        expected = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=0)


def test_scaling_inside_the_compiled_function_equals_scaling_before_it(fast, windows):
    rng = np.random.default_rng(5)
    mean = rng.normal(50.0, 10.0, FEATURES).astype(np.float32)
    std = rng.uniform(0.5, 5.0, FEATURES).astype(np.float32)
    raw = (windows * std + mean).astype(np.float32)
    scaled_before = ((raw - mean) / std).astype(np.float32)
    np.testing.assert_array_equal(fast.feature_errors(raw, 2, mean, std), fast.feature_errors(scaled_before, 2))


def test_headwise_rejects_an_unknown_head(fast, windows):
    with pytest.raises(IndexError, match="head 3 out of range 0..2"):
        fast.feature_errors(windows, HEADS)


def test_grow_keeps_weights_and_outputs_of_existing_heads(model, windows):
    grown = grow_autoencoder(model)
    assert n_heads_of(grown) == HEADS + 1
    for layer in model.layers:
        for old, new in zip(layer.get_weights(), grown.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(old, new)
    for head in range(HEADS):
        np.testing.assert_allclose(routed_errors(grown, windows, head), routed_errors(model, windows, head), atol=1e-6)
    assert grown.get_layer(head_layer_names(HEADS)[1]).get_weights()  # the new head exists and has weights


def test_freeze_all_but_head(model):
    grown = grow_autoencoder(model)
    freeze_all_but_head(grown, HEADS)
    trainable = {layer.name for layer in grown.layers if layer.trainable and layer.weights}
    assert trainable == set(head_layer_names(HEADS)) - {head_layer_names(HEADS)[0]}  # RepeatVector has no weights
    assert not grown.get_layer("encoder_lstm_1").trainable


def test_save_and_load_in_safe_mode_gives_identical_predictions(model, windows, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    assert isinstance(loaded.get_layer("router"), CompressorRouter)
    heads = np.arange(len(windows), dtype=np.int32) % HEADS
    np.testing.assert_array_equal(np.asarray(loaded([windows, heads])), np.asarray(model([windows, heads])))
