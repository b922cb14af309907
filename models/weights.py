"""The autoencoder's weights as plain arrays: what the head-wise inference path needs, without Keras.

A model version of the LSTM autoencoder keeps them in WEIGHTS_FILE next to model.keras (both
written from the same network at save time, both hashed in the version's metadata), so a process
that only scores reads a few arrays instead of building the routed Keras model with every head.
The file is an .npz of float32 arrays named "<layer>/<i>" (an LSTM's kernel, recurrent kernel and
bias; a Dense layer's kernel and bias), read with allow_pickle=False; `load` checks that the
arrays chain into the encoder and one decoder per head, so a corrupt or edited file is refused.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ModelArtifactError

WEIGHTS_FILE = "weights.npz"
ENCODER_LAYERS = ("encoder_lstm_1", "encoder_lstm_2", "encoder_code")
_KINDS = ("lstm", "lstm", "dense")  # of the encoder's layers and of a head's weighted layers alike

Layer = tuple[np.ndarray, ...]


def head_layer_names(head: int) -> tuple[str, str, str, str]:
    """Names of the four layers of decoder head `head` (RepeatVector, LSTM, LSTM, Dense)."""
    return (f"head_{head}_repeat", f"head_{head}_lstm_1", f"head_{head}_lstm_2", f"head_{head}_output")


def weighted_head_layers(head: int) -> tuple[str, str, str]:
    """The three layers of head `head` that have weights (all but its RepeatVector)."""
    return head_layer_names(head)[1:]


@dataclass(frozen=True)
class NetworkWeights:
    """Encoder and per-head arrays of a routed autoencoder over windows of `steps` time steps."""

    steps: int
    encoder: tuple[Layer, Layer, Layer]
    heads: tuple[tuple[Layer, Layer, Layer], ...]

    @property
    def n_features(self) -> int:
        return int(self.encoder[0][0].shape[0])

    @classmethod
    def from_model(cls, model) -> "NetworkWeights":
        """The arrays of a routed Keras model (models/autoencoder.py)."""
        n_heads = int(model.get_layer("router").n_heads)

        def arrays(name: str) -> Layer:
            return tuple(np.asarray(w, np.float32) for w in model.get_layer(name).get_weights())

        return cls(
            int(model.input[0].shape[1]),
            tuple(arrays(name) for name in ENCODER_LAYERS),
            tuple(tuple(arrays(name) for name in weighted_head_layers(h)) for h in range(n_heads)),
        )

    def _named(self) -> dict[str, Layer]:
        named = dict(zip(ENCODER_LAYERS, self.encoder))
        for h, head in enumerate(self.heads):
            named.update(zip(weighted_head_layers(h), head))
        return named

    def save(self, path: Path) -> None:
        np.savez(path, **{f"{name}/{i}": w for name, layer in self._named().items() for i, w in enumerate(layer)})

    @classmethod
    def load(cls, path: Path, steps: int, n_heads: int) -> "NetworkWeights":
        """The arrays saved at `path` for `n_heads` heads; ModelArtifactError when the file is unreadable or does not chain."""
        names = (*ENCODER_LAYERS, *(n for h in range(n_heads) for n in weighted_head_layers(h)))
        try:
            with np.load(path, allow_pickle=False) as npz:
                found = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelArtifactError(f"{path} is unreadable: {exc}") from exc
        layers = {}
        for name, kind in zip(names, _KINDS * (n_heads + 1)):
            size = 3 if kind == "lstm" else 2
            keys = [f"{name}/{i}" for i in range(size)]
            missing = [k for k in keys if k not in found]
            if missing:
                raise ModelArtifactError(f"{path}: array {missing[0]} is missing")
            layers[name] = tuple(found.pop(k) for k in keys)
        if found:
            raise ModelArtifactError(f"{path}: unexpected array {sorted(found)[0]} (the file holds another network than its state file describes)")
        weights = cls(int(steps), tuple(layers[n] for n in ENCODER_LAYERS), tuple(tuple(layers[n] for n in weighted_head_layers(h)) for h in range(n_heads)))
        weights._check(path)
        return weights

    def _check(self, path: Path) -> None:
        """Every array float32, each layer's input width the width before it, each head ending in n_features."""
        width = self.n_features
        code = _chain(path, zip(ENCODER_LAYERS, self.encoder), width)
        for h, head in enumerate(self.heads):
            if _chain(path, zip(weighted_head_layers(h), head), code) != width:
                raise ModelArtifactError(f"{path}: head {h} does not reconstruct {width} features")


def _chain(path: Path, layers, width: int) -> int:
    """The output width of `layers` fed `width` inputs; ModelArtifactError at the first array that does not fit."""
    for (name, arrays), kind in zip(layers, _KINDS):
        if any(w.dtype != np.float32 for w in arrays):
            raise ModelArtifactError(f"{path}: {name} is not float32")
        if kind == "lstm":
            kernel, recurrent, bias = arrays
            units = recurrent.shape[0] if recurrent.ndim == 2 else -1
            fits = kernel.shape == (width, 4 * units) and recurrent.shape == (units, 4 * units) and bias.shape == (4 * units,)
        else:
            kernel, bias = arrays
            units = kernel.shape[1] if kernel.ndim == 2 else -1
            fits = kernel.shape == (width, units) and bias.shape == (units,)
        if not fits or units < 1:
            raise ModelArtifactError(f"{path}: the arrays of {name} do not fit a layer fed {width} values")
        width = units
    return width
