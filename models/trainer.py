"""Head-wise training: each batch holds one compressor's windows and updates the encoder and that head only.

The loss of a window depends only on its own compressor's head, so this is the same objective
as fitting the routed model, without computing every head for every window. One XLA-compiled
step per head, fixed batch shape (the remainder of an epoch's shuffle is left for later epochs),
time-ordered validation for early stopping, best weights restored, a progress bar on a terminal
and one log line per epoch.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from models.autoencoder import keras
from models.weights import ENCODER_LAYERS, head_layer_names

log = logging.getLogger(__name__)


class _OneStepPerHead(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls ... triggered tf.function retracing" warning: this trainer
    compiles one step and one loss function per head on purpose (each traced once), which that heuristic
    reports as retracing on every fleet of more than four compressors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_OneStepPerHead())


@dataclass
class HeadData:
    """Scaled training and validation windows of one head."""

    head: int
    train: np.ndarray
    validation: np.ndarray


class HeadwiseTrainer:
    """Fits a routed autoencoder one head-batch at a time."""

    def __init__(self, model: keras.Model, learning_rate: float, batch_size: int, train_encoder: bool = True) -> None:
        self.model = model
        self.batch_size = batch_size
        self.train_encoder = train_encoder
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(model.trainable_variables)
        self._steps: dict[int, object] = {}
        self._losses: dict[int, object] = {}

    def _layers(self, head: int) -> list:
        return [self.model.get_layer(n) for n in (*ENCODER_LAYERS, *head_layer_names(head))]

    def _step(self, head: int):
        if head not in self._steps:
            layers = self._layers(head)
            trainable = layers if self.train_encoder else layers[len(ENCODER_LAYERS) :]
            variables = [v for layer in trainable for v in layer.trainable_variables]

            @tf.function(jit_compile=True)
            def step(x):
                with tf.GradientTape() as tape:
                    z = x
                    for layer in layers:
                        z = layer(z, training=True)
                    loss = tf.reduce_mean(tf.square(z - x))
                self.optimizer.apply(tape.gradient(loss, variables), variables)
                return loss

            self._steps[head] = step
        return self._steps[head]

    def _loss(self, head: int):
        if head not in self._losses:
            layers = self._layers(head)

            @tf.function(jit_compile=True)
            def loss(x):
                z = x
                for layer in layers:
                    z = layer(z, training=False)
                return tf.reduce_mean(tf.square(z - x), axis=(1, 2))

            self._losses[head] = loss
        return self._losses[head]

    def _validation_loss(self, data: list[HeadData]) -> float:
        """Mean squared error over every validation window (last batch zero-padded, padding ignored)."""
        total, count = 0.0, 0
        for item in data:
            for start in range(0, len(item.validation), self.batch_size):
                chunk = item.validation[start : start + self.batch_size]
                padded = np.zeros((self.batch_size, *chunk.shape[1:]), np.float32)
                padded[: len(chunk)] = chunk
                total += float(np.sum(self._loss(item.head)(padded).numpy()[: len(chunk)]))
                count += len(chunk)
        return total / max(count, 1)

    def fit(self, data: list[HeadData], epochs: int, patience: int, seed: int) -> dict[str, list[float]]:
        """Train until the validation loss stops improving for `patience` epochs."""
        rng = np.random.default_rng(seed)
        by_head = {item.head: item for item in data}
        history: dict[str, list[float]] = {"loss": [], "val_loss": []}
        best, best_weights, waited = np.inf, self.model.get_weights(), 0
        for epoch in range(epochs):
            started = time.perf_counter()
            batches = []
            for item in data:
                size = min(self.batch_size, len(item.train))
                order = rng.permutation(len(item.train))
                usable = len(order) - len(order) % size
                batches += [(item.head, order[i : i + size]) for i in range(0, usable, size)]
            rng.shuffle(batches)
            progress = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False, disable=not sys.stderr.isatty())
            losses = [float(self._step(head)(by_head[head].train[idx])) for head, idx in progress]
            val_loss = self._validation_loss(data)
            history["loss"].append(float(np.mean(losses)) if losses else float("nan"))
            history["val_loss"].append(val_loss)
            log.info(
                "training epoch %d/%d: loss=%.5f val_loss=%.5f (%d batches, %.1f s)",
                epoch + 1, epochs, history["loss"][-1], val_loss, len(batches), time.perf_counter() - started,
            )
            if val_loss < best - 1e-6:
                best, best_weights, waited = val_loss, self.model.get_weights(), 0
            else:
                waited += 1
                if waited >= patience:
                    log.info("early stopping after epoch %d (best val_loss=%.5f)", epoch + 1, best)
                    break
        self.model.set_weights(best_weights)
        return history

