"""Fast inference: each window goes through the shared encoder and only its own decoder head.

The routed Keras model computes every head for every window. Here the network's weights
(models/weights.py: read from the version's weights file, or out of a Keras model) and an
XLA-compiled function evaluate encoder + one head on fixed-size batches (the last one padded,
so nothing is retraced). It returns per-feature squared errors directly, so the full
reconstruction never leaves the compiled function.

Batches of 512 windows keep an LSTM layer's states in the core's cache; `workers` threads run
batches side by side (XLA releases the GIL), which on a small CPU beats splitting each small
matrix product across cores (core/threads.py turns that split off in processes that only score).

Two graphs compute the same numbers: the 30 steps unrolled (fastest, but the first call of a
process traces and compiles ~120 LSTM steps) and a loop over the steps (about a tenth of the
compile time, about half the speed). Calls of up to ROLLED_UP_TO windows (an hourly run) use the
loop, on batches of at most ROLLED_BATCH windows (an hour of one compressor pads to 128 windows,
not 512, at the same speed per window); larger ones (a backfill) the unrolled graph. Each is
compiled on its first use, or loaded from the persistent cache of models/compile_cache.py.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from core.threads import available_cpus
from core.tf_startup import runtime_output_to_log
from models.weights import NetworkWeights

DEFAULT_BATCH = 512
ROLLED_UP_TO = 8192
ROLLED_BATCH = 128


LSTM_NONLINEARITIES = (tf.sigmoid, tf.tanh)


def _lstm(step_inputs, recurrent_kernel, nonlinearities=LSTM_NONLINEARITIES):
    """Run an LSTM over its per-step inputs already multiplied by the kernel (+bias); h of every step.

    `step_inputs` is a time-major tensor or a list (the same tensor repeated for RepeatVector's
    input, which is then projected once rather than at every step).
    """
    units = recurrent_kernel.shape[0]
    batch = tf.shape(step_inputs[0])[0]
    h = tf.zeros((batch, units), recurrent_kernel.dtype)
    c = tf.zeros((batch, units), recurrent_kernel.dtype)
    outputs = []
    for projected in step_inputs:
        h, c = _cell(projected + tf.matmul(h, recurrent_kernel), c, nonlinearities)
        outputs.append(h)
    return outputs


def _cell(z, c, nonlinearities):
    """One LSTM step from its gate pre-activations z (i, f, g, o): the new h and c."""
    sigmoid, tanh = nonlinearities
    i, f, g, o = tf.split(z, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * tanh(g)
    return sigmoid(o) * tanh(c), c


def _unrolled(inputs, recurrent_kernel, steps: int, nonlinearities, repeated: bool):
    """h of every step, (steps, batch, units), the steps unrolled; `inputs` (batch, 4u) when `repeated`, else (steps, batch, 4u)."""
    step_inputs = [inputs] * steps if repeated else tf.unstack(inputs, steps)
    return tf.stack(_lstm(step_inputs, recurrent_kernel, nonlinearities))


def _rolled(inputs, recurrent_kernel, steps: int, nonlinearities, repeated: bool):
    """The same as `_unrolled`, as one loop over the steps."""
    units = recurrent_kernel.shape[0]
    zeros = tf.zeros((tf.shape(inputs)[0 if repeated else 1], units), recurrent_kernel.dtype)

    def step(t, h, c, outputs):
        h, c = _cell((inputs if repeated else inputs[t]) + tf.matmul(h, recurrent_kernel), c, nonlinearities)
        return t + 1, h, c, outputs.write(t, h)

    start = (tf.constant(0), zeros, zeros, tf.TensorArray(recurrent_kernel.dtype, size=steps))
    *_, outputs = tf.while_loop(lambda t, *_: t < steps, step, start)
    return outputs.stack()


def _make_error_function(steps: int, nonlinearities=LSTM_NONLINEARITIES, rolled: bool = False):
    """The XLA-compiled per-feature error function of encoder + one head (`rolled`: as loops over the steps).

    `nonlinearities` are the LSTM gate functions (sigmoid, tanh); benchmarks/inference.py swaps
    in the identity to measure what the matrix products alone allow on a machine.
    """
    lstm = _rolled if rolled else _unrolled

    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)  # no tensor-dependent Python control flow to convert
    def feature_errors(windows, mean, std, encoder, head):
        (k1, r1, b1), (k2, r2, b2), (kc, bc) = encoder
        (k3, r3, b3), (k4, r4, b4), (ko, bo) = head
        time_major = tf.transpose((windows - mean) / std, (1, 0, 2))  # scaled, (steps, batch, features)
        projected = tf.einsum("tbf,fg->tbg", time_major, k1) + b1
        h1 = lstm(projected, r1, steps, nonlinearities, False)
        projected = tf.einsum("tbu,ug->tbg", h1, k2) + b2
        h2 = lstm(projected, r2, steps, nonlinearities, False)[-1]
        code = tf.matmul(h2, kc) + bc
        h3 = lstm(tf.matmul(code, k3) + b3, r3, steps, nonlinearities, True)
        projected = tf.einsum("tbu,ug->tbg", h3, k4) + b4
        h4 = lstm(projected, r4, steps, nonlinearities, False)
        reconstruction = tf.einsum("tbu,uf->tbf", h4, ko) + bo
        return tf.reduce_mean(tf.square(reconstruction - time_major), axis=0)  # (batch, features)

    return feature_errors


class HeadwiseReconstructor:
    """Per-feature reconstruction errors computed with the needed decoder head only."""

    def __init__(
        self, weights: NetworkWeights, batch_size: int = DEFAULT_BATCH, workers: int | None = None, nonlinearities=LSTM_NONLINEARITIES
    ) -> None:
        self.steps, self.n_features = weights.steps, weights.n_features
        self.batch_size = int(batch_size)
        self._batch = {True: min(self.batch_size, ROLLED_BATCH), False: self.batch_size}  # rolled -> padded batch
        self.workers = int(workers or available_cpus())
        self.n_heads = len(weights.heads)
        self._encoder = tuple(tuple(tf.constant(w) for w in layer) for layer in weights.encoder)
        self._heads = [tuple(tuple(tf.constant(w) for w in layer) for layer in head) for head in weights.heads]
        self._nonlinearities = nonlinearities
        self._functions: dict[bool, object] = {}  # rolled -> compiled function
        self._compile_lock = threading.Lock()
        # Made here, not on first use: callers score compressors from several threads at once.
        # Its threads start only when batches are submitted.
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="inference")

    def _function(self, rolled: bool):
        """The compiled function (compiled, or loaded from the compilation cache, on first use)."""
        with self._compile_lock:
            if rolled not in self._functions:
                function = _make_error_function(self.steps, self._nonlinearities, rolled)
                zeros = np.zeros((self._batch[rolled], self.steps, self.n_features), np.float32)
                with runtime_output_to_log():
                    function(zeros, zeros[0, 0], zeros[0, 0] + 1, self._encoder, self._heads[0])
                self._functions[rolled] = function
            return self._functions[rolled]

    def compile_all(self) -> None:
        """Compile both graphs now (to fill the compilation cache)."""
        for rolled in (True, False):
            self._function(rolled)

    def feature_errors(self, windows: np.ndarray, head: int, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> np.ndarray:
        """(n, steps, features) windows of one compressor -> (n, features) mean squared errors.

        With `mean` and `std` the windows are raw and scaled inside the compiled function as
        (windows - mean) / std; without them they are already scaled.
        """
        if not 0 <= head < self.n_heads:
            raise IndexError(f"head {head} out of range 0..{self.n_heads - 1}")
        windows = np.asarray(windows, dtype=np.float32)
        mean = np.zeros(self.n_features, np.float32) if mean is None else np.asarray(mean, np.float32)
        std = np.ones(self.n_features, np.float32) if std is None else np.asarray(std, np.float32)
        n = len(windows)
        out = np.empty((n, self.n_features), dtype=np.float32)
        rolled = n <= ROLLED_UP_TO
        batch = self._batch[rolled]
        starts = range(0, n, batch)
        errors = self._function(rolled)

        def run_batch(start: int) -> None:
            chunk = windows[start : start + batch]
            size = len(chunk)
            if size < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - size, *chunk.shape[1:]), np.float32)])
            out[start : start + size] = errors(chunk, mean, std, self._encoder, self._heads[head]).numpy()[:size]

        if self.workers == 1 or len(starts) == 1:
            for start in starts:
                run_batch(start)
        else:
            list(self._pool.map(run_batch, starts))  # re-raises a batch's exception
        return out
