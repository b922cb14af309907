"""The compressor-aware LSTM autoencoder detector (fit / feature_errors / anomaly_score / save / load).

Scoring needs only the network's arrays (models/weights.py). A version holds them in WEIGHTS_FILE
next to model.keras, and `load` reads that file without importing Keras; the Keras model is loaded
from model.keras on first use of `model` (adding a compressor). A version saved before the weights
file existed loads through model.keras.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import ModelArtifactError
from core.settings import TrainingSettings
from core.windows import WindowSet
from models.detector import CompressorHeads, ScoreDetails
from models.error_model import ErrorModel
from models.inference import DEFAULT_BATCH, NUMPY_UP_TO, HeadwiseReconstructor
from models.scaler import CompressorScaler, RowMoments
from models.weights import WEIGHTS_FILE, NetworkWeights

if TYPE_CHECKING:
    from models.trainer import HeadData

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
STATE_FILE = "detector.json"


def _strided(ws: WindowSet, stride: int) -> WindowSet:
    return ws.take(slice(None, None, max(1, stride)))


class LSTMAutoencoderDetector(CompressorHeads):
    """Shared LSTM encoder, one decoder head per compressor; score = window reconstruction MSE."""

    name = "lstm_ae"

    def __init__(
        self, features: tuple[str, ...], window: int, training: TrainingSettings | None = None, score_method: str = "mahalanobis"
    ) -> None:
        self.features = tuple(features)
        self.window = int(window)
        self.training = training or TrainingSettings()
        self.compressors: list[str] = []
        self.scaler = CompressorScaler()
        self.error_model = ErrorModel(score_method)
        self._model = None  # the routed Keras model, built by `fit` or loaded from _model_file on first use
        self._model_file: Path | None = None
        self._weights: NetworkWeights | None = None  # read from the version's weights file, or taken from _model
        self.history: dict[str, list[float]] = {}
        self._batch_size = DEFAULT_BATCH
        self._numpy_up_to = NUMPY_UP_TO
        self._reconstructor: HeadwiseReconstructor | None = None
        self._reconstructor_lock = threading.Lock()

    # ------------------------------------------------------------------ network
    @property
    def model(self):
        """The routed Keras model (models/autoencoder.py); loaded from the version's model.keras on first use."""
        if self._model is None and self._model_file is not None:
            self._model = _load_keras_model(self._model_file)
        return self._model

    @model.setter
    def model(self, model) -> None:
        self._model, self._model_file = model, None
        self._network_changed()

    @property
    def weights(self) -> NetworkWeights:
        """The arrays the head-wise inference path runs on."""
        if self._weights is None:
            self._weights = NetworkWeights.from_model(self.model)
        return self._weights

    def _network_changed(self) -> None:
        with self._reconstructor_lock:
            self._weights = None
            self._reconstructor = None

    # ----------------------------------------------------------------- training
    def _head_data(self, train: dict[str, WindowSet], validation: dict[str, WindowSet]) -> list[HeadData]:
        from models.trainer import HeadData

        stride = self.training.window_stride
        return [
            HeadData(
                self.compressors.index(cid),
                self.scaler.transform(_strided(train[cid], stride).windows, cid),
                self.scaler.transform(_strided(validation[cid], stride).windows, cid),
            )
            for cid in train
        ]

    def _fit_heads(self, train: dict[str, WindowSet], validation: dict[str, WindowSet], train_encoder: bool) -> None:
        cfg = self.training
        data = self._head_data(train, validation)
        log.info(
            "training on %d windows (%d validation) for %s",
            sum(len(d.train) for d in data), sum(len(d.validation) for d in data), ", ".join(train),
        )
        from models.trainer import HeadwiseTrainer

        trainer = HeadwiseTrainer(self.model, cfg.learning_rate, cfg.batch_size, train_encoder)
        for key, values in trainer.fit(data, cfg.epochs, cfg.patience, cfg.seed).items():
            self.history.setdefault(key, []).extend(values)
        self._network_changed()

    def fit(
        self, train: dict[str, WindowSet], validation: dict[str, WindowSet], row_moments: dict[str, RowMoments] | None = None
    ) -> "LSTMAutoencoderDetector":
        """Fit scalers on the training rows and the model on normal windows of every compressor.

        `validation` holds each compressor's held-out calibration windows (models/calibration.py), for early stopping;
        `row_moments`, where given, are a compressor's scaler statistics over all its streamed rows.
        """
        from models.autoencoder import build_autoencoder, keras

        keras.utils.set_random_seed(self.training.seed)
        self.compressors = sorted(train)
        for cid in self.compressors:
            if row_moments and cid in row_moments:
                self.scaler.fit_moments(row_moments[cid], cid)
            else:
                self.scaler.fit(train[cid].last_rows(), cid)
        self.model = build_autoencoder(len(self.compressors), self.window, len(self.features))
        self._fit_heads(train, validation, train_encoder=True)
        return self

    def fit_normal(self, cid: str, folds: list[WindowSet]) -> np.ndarray:
        """Fit `cid`'s error model on held-out normal windows; return their out-of-fold scores.

        Each fold is scored by an error model fitted on the other folds, so no window's score uses
        statistics fitted on itself; the kept error model is fitted on all folds.
        """
        errors = [np.concatenate([self.feature_errors(w, cid) for _, w in f.chunks(65_536)]) for f in folds]
        out_of_fold = [
            ErrorModel(self.error_model.method).fit(np.concatenate(errors[:i] + errors[i + 1 :]), cid).score(e, cid)
            for i, e in enumerate(errors)
        ]
        self.error_model.fit(np.concatenate(errors), cid)
        return np.concatenate(out_of_fold)

    def with_score_method(self, method: str) -> "LSTMAutoencoderDetector":
        """A copy whose error model uses `method` and is not fitted yet (`fit_normal` fits it per compressor).

        The copy shares this detector's network, scalers and compiled inference, so it is for
        calibrating under another score method, not for training; this detector is unchanged.
        """
        other = copy.copy(self)
        other.error_model = ErrorModel(method)
        return other

    def add_compressor(self, cid: str, train: WindowSet, validation: WindowSet) -> "LSTMAutoencoderDetector":
        """Train a head for a new compressor; the encoder and the other heads stay frozen."""
        if cid in self.compressors:
            raise ValueError(f"compressor {cid!r} already has a head in this model")
        from models.autoencoder import freeze_all_but_head, grow_autoencoder, keras

        keras.utils.set_random_seed(self.training.seed)
        self.scaler.fit(train.last_rows(), cid)
        self.compressors.append(cid)
        self.model = grow_autoencoder(self.model)
        freeze_all_but_head(self.model, len(self.compressors) - 1)
        self._fit_heads({cid: train}, {cid: validation}, train_encoder=False)
        return self

    # ---------------------------------------------------------------- inference
    @property
    def reconstructor(self) -> HeadwiseReconstructor:
        with self._reconstructor_lock:  # compressors scored on several threads share one compiled path
            if self._reconstructor is None:
                self._reconstructor = HeadwiseReconstructor(self.weights, self._batch_size, numpy_up_to=self._numpy_up_to)
            return self._reconstructor

    def set_batch_size(self, size: int) -> None:
        """Pad inference to batches of `size` windows from now on (one compiled shape, compiled on first use)."""
        if size < 1:
            raise ValueError(f"batch size must be at least 1, got {size}")
        with self._reconstructor_lock:
            self._batch_size = int(size)
            self._reconstructor = None

    def for_many_runs(self) -> None:
        """Every call through the compiled XLA graph from now on (TensorFlow started on the first call), not NumPy for small ones."""
        with self._reconstructor_lock:
            if self._numpy_up_to:
                self._numpy_up_to = 0
                self._reconstructor = None

    def feature_errors(self, windows: np.ndarray, cid: str) -> np.ndarray:
        """(n, window, features) raw windows of one compressor -> (n, features) squared errors."""
        head = self.head_of(cid)
        if len(windows) == 0:
            return np.zeros((0, len(self.features)), np.float32)
        return self.reconstructor.feature_errors(windows, head, *self.scaler.params(cid))  # scaled inside

    def anomaly_score(self, windows: np.ndarray, cid: str) -> np.ndarray:
        """Anomaly score per window (higher is more anomalous); see models/error_model.py."""
        return self.error_model.score(self.feature_errors(windows, cid), cid)

    def anomaly_score_details(self, windows: np.ndarray, cid: str) -> ScoreDetails:
        """Scores, per-feature squared errors and per-feature contributions, in one pass."""
        errors = self.feature_errors(windows, cid)
        return ScoreDetails(self.error_model.score(errors, cid), errors, self.error_model.contributions(errors, cid))

    # -------------------------------------------------------------- persistence
    def save(self, directory: Path) -> list[str]:
        """Write the .keras file, the weights file and a JSON state file; return their names.

        A network loaded from a version and not changed since is written as it was read: its
        model.keras copied, its arrays saved again.
        """
        if self._model is None and self._model_file is not None:
            shutil.copyfile(self._model_file, directory / MODEL_FILE)
        else:
            self.model.save(directory / MODEL_FILE)
        self.weights.save(directory / WEIGHTS_FILE)
        state = {
            "detector": self.name,
            "features": list(self.features),
            "window": self.window,
            "compressors": self.compressors,
            "scaler": self.scaler.to_dict(),
            "error_model": self.error_model.to_dict(),
            "history": self.history,
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        return [MODEL_FILE, WEIGHTS_FILE, STATE_FILE]

    @classmethod
    def load(cls, directory: Path, training: TrainingSettings | None = None) -> "LSTMAutoencoderDetector":
        """Load the state and the weights file (no Keras), or model.keras where a version has no weights file.

        Keras loads in safe mode (no arbitrary code); ModelArtifactError if anything is unreadable or inconsistent.
        """
        try:
            state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
            detector = cls(tuple(state["features"]), state["window"], training)
            detector.compressors = list(state["compressors"])
            detector.scaler = CompressorScaler.from_dict(state["scaler"])
            detector.error_model = ErrorModel.from_dict(state["error_model"])
            detector.history = state.get("history", {})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelArtifactError(f"cannot load the LSTM autoencoder from {directory}: {exc}") from exc
        if (directory / WEIGHTS_FILE).is_file():
            weights = NetworkWeights.load(directory / WEIGHTS_FILE, detector.window, len(detector.compressors))
            if weights.n_features != len(detector.features):
                raise ModelArtifactError(f"{directory}: the weights take {weights.n_features} features, the state file lists {len(detector.features)}")
            detector._weights, detector._model_file = weights, directory / MODEL_FILE
            return detector
        detector._model = _load_keras_model(directory / MODEL_FILE)
        if detector._model.get_layer("router").n_heads != len(detector.compressors):
            raise ModelArtifactError(f"{directory}: the model's heads do not match its compressor list")
        return detector


def _load_keras_model(path: Path):
    """The routed model saved at `path`, in Keras safe mode; ModelArtifactError if unreadable."""
    from models.autoencoder import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelArtifactError(f"cannot load the LSTM autoencoder from {path.parent}: {exc}") from exc
