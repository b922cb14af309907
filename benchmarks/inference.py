"""Inference throughput: the seed's routed model vs the project's head-wise path, on the same windows.

    python benchmarks/inference.py [--windows 100000] [--compressors 10] [--batch 512]

(a) seed style: the whole model with every head and the routing layer, model.predict(batch_size=128);
(b) this project: windows grouped by compressor, shared encoder + only that compressor's head,
    XLA-compiled, fixed-size padded batches run on one thread per CPU, per-feature errors
    computed inside the function.
Both paths start from the same windows and weights; (a) runs in a child process with
TensorFlow's default thread pools, (b) with the single-threaded kernels `run` uses.
Compile/warm-up time is excluded from both.

(c) the same as (b) with the LSTM's sigmoid and tanh replaced by the identity: only the matrix
    products remain, so its rate is the most (b) can reach with float32 products on this machine.
Ends with one JSON line (with (c) as "matmul_only_windows_per_s").
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from core.settings import DEFAULT_FEATURES  # noqa: E402
from models.autoencoder import build_autoencoder, keras  # noqa: E402
from core.threads import use_single_threaded_kernels  # noqa: E402
from models.inference import DEFAULT_BATCH, HeadwiseReconstructor  # noqa: E402
from models.weights import NetworkWeights  # noqa: E402

import tensorflow as tf  # noqa: E402  (after models.autoencoder has set TensorFlow's log level)

from models.xla_graph import LSTM_NONLINEARITIES  # noqa: E402

IDENTITY = (tf.identity, tf.identity)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def seed_style(windows: np.ndarray, heads: np.ndarray, model) -> tuple[np.ndarray, float]:
    """The whole routed model, predict(batch_size=128); returns per-feature errors."""
    model.predict([windows[:256], heads[:256]], batch_size=128, verbose=0)
    started = time.perf_counter()
    reconstruction = model.predict([windows, heads], batch_size=128, verbose=0)
    seconds = time.perf_counter() - started
    print(f"(a) seed style, all heads + router, predict(batch_size=128): {len(windows) / seconds:,.0f} windows/s ({seconds:.1f} s)")
    return ((reconstruction - windows) ** 2).mean(axis=1), len(windows) / seconds


def headwise(windows: np.ndarray, heads: np.ndarray, model, batch: int, nonlinearities=LSTM_NONLINEARITIES) -> tuple[np.ndarray, float]:
    """The project's path: grouped by compressor, shared encoder + that compressor's head only."""
    fast = HeadwiseReconstructor(NetworkWeights.from_model(model), batch, nonlinearities=nonlinearities)
    order = np.argsort(heads, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(heads[order])) + 1)
    fast.compile_xla()  # so no timed call compiles (calls of this size use the XLA graph, models/inference.py)
    started = time.perf_counter()
    errors = np.empty((len(windows), windows.shape[2]), np.float32)
    for group in groups:
        errors[group] = fast.feature_errors(windows[group], int(heads[group[0]]))
    seconds = time.perf_counter() - started
    rate = len(windows) / seconds
    label = "(c) matrix products only" if nonlinearities is IDENTITY else "(b) head-wise"
    print(f"{label}, XLA, batch {batch}, {fast.workers} inference threads: {rate:,.0f} windows/s ({seconds:.1f} s)")
    return errors, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=100_000)
    parser.add_argument("--compressors", type=int, default=10)
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--seed-windows", type=int, default=0, help="time the seed path on this many windows only (0 = all)")
    parser.add_argument("--seed-only", metavar="NPZ", help=argparse.SUPPRESS)  # child process: run (a), save to NPZ
    args = parser.parse_args()

    n_features = len(DEFAULT_FEATURES)
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(args.windows, args.window, n_features)).astype(np.float32)
    heads = rng.integers(0, args.compressors, size=args.windows).astype(np.int32)
    seed_n = args.seed_windows or args.windows
    if args.seed_only:  # TensorFlow's default thread pools, as the seed ran
        keras.utils.set_random_seed(0)
        model = build_autoencoder(args.compressors, args.window, n_features)
        errors, rate = seed_style(windows[:seed_n], heads[:seed_n], model)
        np.savez(args.seed_only, errors=errors, rate=rate)
        return

    print(f"threads: {os.cpu_count()} CPUs; windows: {args.windows:,}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seed.npz"
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--seed-only", str(out)], check=True)
        seed = np.load(out)
        reference, seed_rate = seed["errors"], float(seed["rate"])
    use_single_threaded_kernels()  # as `run` and `backfill` do; before this process's first TensorFlow operation
    keras.utils.set_random_seed(0)  # the same weights as the child's model
    model = build_autoencoder(args.compressors, args.window, n_features)
    print(f"model: {args.compressors} heads, window {args.window}, {n_features} features, {model.count_params():,} parameters")
    errors, rate = headwise(windows, heads, model, args.batch)
    _, ceiling = headwise(windows, heads, model, args.batch, IDENTITY)

    max_diff = float(np.abs(reference - errors[:seed_n]).max())
    print(f"max |difference| of per-feature errors between (a) and (b): {max_diff:.2e}")
    result = {
        "seed_style_windows_per_s": round(seed_rate, 1),
        "windows_per_s": round(rate, 1),
        "ratio": round(rate / seed_rate, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "matmul_only_windows_per_s": round(ceiling, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
