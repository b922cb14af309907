"""Compressor-aware LSTM autoencoder: one shared encoder, one decoder head per compressor.

The whole model (used for training and for save/load) routes each window to its compressor's
head with `CompressorRouter`, a serialisable layer (no Lambda). Every head is computed and the
router keeps one, which is simple but wastes arithmetic; `HeadwiseReconstructor` is the
inference path that runs only the needed head, from the weights of models/weights.py.
"""
from __future__ import annotations

import os

from core.tf_startup import runtime_defaults
from models.weights import ENCODER_LAYERS, head_layer_names

runtime_defaults()  # before Keras imports TensorFlow
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

ENCODER_UNITS = (64, 32)
CODE_SIZE = 16
DECODER_UNITS = (32, 64)


@keras.saving.register_keras_serializable(package="compressor_ad")
class CompressorRouter(layers.Layer):
    """Selects, for each window, the output of the decoder head of its compressor index."""

    def __init__(self, n_heads: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_heads = int(n_heads)

    def call(self, inputs):
        *heads, compressor_index = inputs
        stacked = ops.stack(heads, axis=1)  # (batch, heads, steps, features)
        index = ops.cast(ops.reshape(compressor_index, (-1,)), "int32")
        one_hot = ops.one_hot(index, self.n_heads, dtype=stacked.dtype)
        return ops.einsum("bh,bhtf->btf", one_hot, stacked)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "n_heads": self.n_heads}


def build_decoder_head(head: int, window: int, n_features: int):
    """RepeatVector(window) -> LSTM(32) -> LSTM(64) -> Dense(n_features), as a callable."""
    repeat, lstm_1, lstm_2, output = head_layer_names(head)
    stack = [
        layers.RepeatVector(window, name=repeat),
        layers.LSTM(DECODER_UNITS[0], return_sequences=True, name=lstm_1),
        layers.LSTM(DECODER_UNITS[1], return_sequences=True, name=lstm_2),
        layers.Dense(n_features, name=output),
    ]

    def apply(code):
        for layer in stack:
            code = layer(code)
        return code

    return apply


def build_autoencoder(n_heads: int, window: int, n_features: int) -> keras.Model:
    """The routed model: inputs `window` (batch, window, features) and `compressor_index` (batch,)."""
    window_in = keras.Input((window, n_features), name="window")
    index_in = keras.Input((), dtype="int32", name="compressor_index")
    lstm_1, lstm_2, code_layer = ENCODER_LAYERS
    x = layers.LSTM(ENCODER_UNITS[0], return_sequences=True, name=lstm_1)(window_in)
    x = layers.LSTM(ENCODER_UNITS[1], name=lstm_2)(x)
    code = layers.Dense(CODE_SIZE, name=code_layer)(x)
    heads = [build_decoder_head(h, window, n_features)(code) for h in range(n_heads)]
    reconstruction = CompressorRouter(n_heads, name="router")([*heads, index_in])
    return keras.Model([window_in, index_in], reconstruction, name="compressor_autoencoder")


def n_heads_of(model: keras.Model) -> int:
    """Number of decoder heads of a routed model."""
    return int(model.get_layer("router").n_heads)


def grow_autoencoder(model: keras.Model, extra_heads: int = 1) -> keras.Model:
    """A copy with `extra_heads` new heads; encoder and existing heads keep their weights."""
    _, window, n_features = model.input[0].shape
    old_heads = n_heads_of(model)
    grown = build_autoencoder(old_heads + extra_heads, window, n_features)
    for layer in model.layers:
        if layer.weights:
            grown.get_layer(layer.name).set_weights(layer.get_weights())
    return grown


def freeze_all_but_head(model: keras.Model, head: int) -> None:
    """Make only decoder head `head` trainable (used to add a compressor)."""
    trainable = set(head_layer_names(head))
    for layer in model.layers:
        layer.trainable = layer.name in trainable
