"""Fast inference: each window goes through the shared encoder and only its own decoder head.

The routed Keras model computes every head for every window. Here the network's weights
(models/weights.py: read from the version's weights file, or out of a Keras model) give per-feature
squared errors directly, so the full reconstruction is never returned. Two paths compute them:

- calls of up to NUMPY_UP_TO windows (an hourly cron run: ~120 windows per compressor) run in NumPy
  (float32) on the calling thread, in batches of NUMPY_BATCH: no TensorFlow is imported, nothing is
  compiled. core/threads.py keeps NumPy's BLAS on one thread in scoring processes: the runner
  scores compressors side by side, and at these sizes BLAS threads cost more than they save;
- larger calls (a backfill) use the XLA-compiled graph of models/xla_graph.py on fixed-size batches
  of `batch_size` (the last one padded, so nothing is retraced), `workers` threads running batches
  side by side (XLA releases the GIL). TensorFlow is imported on the first such call, through
  core/tf_startup.import_tensorflow; the graph is compiled then, or loaded from the persistent
  cache of models/compile_cache.py. A long-lived process (the daemon) passes numpy_up_to = 0: it
  pays TensorFlow's start once, and the compiled graph is ~7x faster per window than NumPy.

Invariant: a window's score is the same to float32 round-off (relative 1e-5) whichever path scores
it, in whatever call or batch (BLAS takes another route for a 1-window product: a last bit can differ).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from core.threads import available_cpus
from core.tf_startup import import_tensorflow, runtime_output_to_log
from models.weights import Layer, NetworkWeights

DEFAULT_BATCH = 512
NUMPY_UP_TO = 8192
NUMPY_BATCH = 256


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), with exp taken of -|x| only (no overflow)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, np.float32(1), e) / (1 + e)


def _lstm(projected: np.ndarray, recurrent: np.ndarray, steps: int, repeated: bool) -> np.ndarray:
    """h of every step, (steps, batch, units), from the inputs already multiplied by the kernel (+bias).

    `projected` is (steps, batch, 4u), or (batch, 4u) when `repeated` (RepeatVector's input,
    projected once). Gates in Keras's order i, f, g, o.
    """
    units = recurrent.shape[0]
    batch = projected.shape[0 if repeated else 1]
    h = np.zeros((batch, units), np.float32)
    c = np.zeros((batch, units), np.float32)
    out = np.empty((steps, batch, units), np.float32)
    for t in range(steps):
        z = (projected if repeated else projected[t]) + h @ recurrent
        gates = _sigmoid(z)
        c = gates[:, units : 2 * units] * c + gates[:, :units] * np.tanh(z[:, 2 * units : 3 * units])
        h = out[t] = gates[:, 3 * units :] * np.tanh(c)
    return out


def numpy_feature_errors(windows: np.ndarray, mean: np.ndarray, std: np.ndarray, encoder: tuple[Layer, ...], head: tuple[Layer, ...]) -> np.ndarray:
    """(batch, steps, features) raw windows -> (batch, features) mean squared errors; the function of models/xla_graph.py in NumPy.

    An extreme value gives inf or NaN errors for its window, silently, as the XLA graph does; the
    caller drops non-finite scores (pipeline/scoring.py finite_only) and counts them.
    """
    (k1, r1, b1), (k2, r2, b2), (kc, bc) = encoder
    (k3, r3, b3), (k4, r4, b4), (ko, bo) = head
    steps = windows.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        time_major = ((windows - mean) / std).transpose(1, 0, 2)  # scaled, (steps, batch, features)
        h1 = _lstm(time_major @ k1 + b1, r1, steps, False)
        h2 = _lstm(h1 @ k2 + b2, r2, steps, False)[-1]
        code = h2 @ kc + bc
        h3 = _lstm(code @ k3 + b3, r3, steps, True)
        h4 = _lstm(h3 @ k4 + b4, r4, steps, False)
        reconstruction = h4 @ ko + bo
        return np.square(reconstruction - time_major).mean(axis=0)


class HeadwiseReconstructor:
    """Per-feature reconstruction errors computed with the needed decoder head only."""

    def __init__(
        self, weights: NetworkWeights, batch_size: int = DEFAULT_BATCH, workers: int | None = None, nonlinearities=None, numpy_up_to: int = NUMPY_UP_TO
    ) -> None:
        """`nonlinearities`: the XLA graph's LSTM gate functions (default sigmoid, tanh; see models/xla_graph.py).
        `numpy_up_to`: calls of up to this many windows run in NumPy (0: every call compiled, for a long-lived process)."""
        self.numpy_up_to = int(numpy_up_to)
        self.steps, self.n_features = weights.steps, weights.n_features
        self.batch_size = int(batch_size)
        self.workers = int(workers or available_cpus())
        self.n_heads = len(weights.heads)
        self._weights = weights
        self._nonlinearities = nonlinearities
        self._xla = None  # (compiled function, encoder constants, head constants), made on first use
        self._compile_lock = threading.Lock()
        # Made here, not on first use: callers score compressors from several threads at once.
        # Its threads start only when batches are submitted.
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="inference")

    def _compiled(self):
        """The XLA function and the weights as constants (TensorFlow started, the graph compiled or loaded from the cache, on first use)."""
        with self._compile_lock:
            if self._xla is None:
                import_tensorflow()
                from models import xla_graph

                function = xla_graph.make_error_function(self.steps, self._nonlinearities or xla_graph.LSTM_NONLINEARITIES)
                encoder = xla_graph.constants(self._weights.encoder)
                heads = [xla_graph.constants(head) for head in self._weights.heads]
                zeros = np.zeros((self.batch_size, self.steps, self.n_features), np.float32)
                with runtime_output_to_log():
                    function(zeros, zeros[0, 0], zeros[0, 0] + 1, encoder, heads[0])
                self._xla = (function, encoder, heads)
            return self._xla

    def compile_xla(self) -> None:
        """Compile the XLA graph now (to fill the compilation cache; starts TensorFlow)."""
        self._compiled()

    def feature_errors(self, windows: np.ndarray, head: int, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> np.ndarray:
        """(n, steps, features) windows of one compressor -> (n, features) mean squared errors.

        With `mean` and `std` the windows are raw and scaled as (windows - mean) / std; without
        them they are already scaled.
        """
        if not 0 <= head < self.n_heads:
            raise IndexError(f"head {head} out of range 0..{self.n_heads - 1}")
        windows = np.asarray(windows, dtype=np.float32)
        mean = np.zeros(self.n_features, np.float32) if mean is None else np.asarray(mean, np.float32)
        std = np.ones(self.n_features, np.float32) if std is None else np.asarray(std, np.float32)
        n = len(windows)
        out = np.empty((n, self.n_features), dtype=np.float32)
        if n <= self.numpy_up_to:
            for start in range(0, n, NUMPY_BATCH):
                out[start : start + NUMPY_BATCH] = numpy_feature_errors(windows[start : start + NUMPY_BATCH], mean, std, self._weights.encoder, self._weights.heads[head])
            return out
        errors, encoder, heads = self._compiled()
        batch = self.batch_size
        starts = range(0, n, batch)

        def run_batch(start: int) -> None:
            chunk = windows[start : start + batch]
            size = len(chunk)
            if size < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - size, *chunk.shape[1:]), np.float32)])
            out[start : start + size] = errors(chunk, mean, std, encoder, heads[head]).numpy()[:size]

        if self.workers == 1 or len(starts) == 1:
            for start in starts:
                run_batch(start)
        else:
            list(self._pool.map(run_batch, starts))  # re-raises a batch's exception
        return out
