"""The XLA-compiled per-feature error function of encoder + one head, its 30 steps unrolled (backfills).

Imports TensorFlow: models/inference.py imports this module only for calls of more than
NUMPY_UP_TO windows, after core/tf_startup.import_tensorflow has started it (with the compilation
cache of models/compile_cache.py where a model version was loaded through models/artifacts.py).
"""
from __future__ import annotations

import tensorflow as tf

LSTM_NONLINEARITIES = (tf.sigmoid, tf.tanh)


def _lstm(step_inputs, recurrent_kernel, nonlinearities):
    """h of every step, (steps, batch, units), from the per-step inputs already multiplied by the kernel (+bias).

    `step_inputs` is a list: the same tensor repeated for RepeatVector's input (projected once
    rather than at every step), else the time-major inputs unstacked.
    """
    sigmoid, tanh = nonlinearities
    units = recurrent_kernel.shape[0]
    batch = tf.shape(step_inputs[0])[0]
    h = tf.zeros((batch, units), recurrent_kernel.dtype)
    c = tf.zeros((batch, units), recurrent_kernel.dtype)
    outputs = []
    for projected in step_inputs:
        i, f, g, o = tf.split(projected + tf.matmul(h, recurrent_kernel), 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h = sigmoid(o) * tanh(c)
        outputs.append(h)
    return tf.stack(outputs)


def make_error_function(steps: int, nonlinearities=LSTM_NONLINEARITIES):
    """feature_errors(windows, mean, std, encoder, head) -> (batch, features), XLA-compiled on its first call.

    `nonlinearities` are the LSTM gate functions (sigmoid, tanh); benchmarks/inference.py swaps
    in the identity to measure what the matrix products alone allow on a machine.
    """

    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)  # no tensor-dependent Python control flow to convert
    def feature_errors(windows, mean, std, encoder, head):
        (k1, r1, b1), (k2, r2, b2), (kc, bc) = encoder
        (k3, r3, b3), (k4, r4, b4), (ko, bo) = head
        time_major = tf.transpose((windows - mean) / std, (1, 0, 2))  # scaled, (steps, batch, features)
        projected = tf.einsum("tbf,fg->tbg", time_major, k1) + b1
        h1 = _lstm(tf.unstack(projected, steps), r1, nonlinearities)
        projected = tf.einsum("tbu,ug->tbg", h1, k2) + b2
        h2 = _lstm(tf.unstack(projected, steps), r2, nonlinearities)[-1]
        code = tf.matmul(h2, kc) + bc
        h3 = _lstm([tf.matmul(code, k3) + b3] * steps, r3, nonlinearities)
        projected = tf.einsum("tbu,ug->tbg", h3, k4) + b4
        h4 = _lstm(tf.unstack(projected, steps), r4, nonlinearities)
        reconstruction = tf.einsum("tbu,uf->tbf", h4, ko) + bo
        return tf.reduce_mean(tf.square(reconstruction - time_major), axis=0)  # (batch, features)

    return feature_errors


def constants(layers):
    """The arrays of `layers` (a tuple of layers' tuples of arrays) as TensorFlow constants, once per reconstructor."""
    return tuple(tuple(tf.constant(w) for w in layer) for layer in layers)
