"""Inference throughput: the seed's routed model vs the project's head-wise path, on the same windows.

    python benchmarks/inference.py [--windows 100000] [--compressors 10] [--batch 2048]

(a) seed style: the whole model with every head and the routing layer, model.predict(batch_size=128);
(b) this project: windows grouped by compressor, shared encoder + only that compressor's head,
    XLA-compiled, fixed-size padded batches, per-feature errors computed inside the function.
Both paths start from the same scaled windows; compile/warm-up time is excluded from both.
Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from core.settings import DEFAULT_FEATURES  # noqa: E402
from models.autoencoder import build_autoencoder  # noqa: E402
from models.inference import HeadwiseReconstructor  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=100_000)
    parser.add_argument("--compressors", type=int, default=10)
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--seed-windows", type=int, default=0, help="time the seed path on this many windows only (0 = all)")
    args = parser.parse_args()

    n_features = len(DEFAULT_FEATURES)
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(args.windows, args.window, n_features)).astype(np.float32)
    heads = rng.integers(0, args.compressors, size=args.windows).astype(np.int32)
    model = build_autoencoder(args.compressors, args.window, n_features)
    print(f"model: {args.compressors} heads, window {args.window}, {n_features} features, {model.count_params():,} parameters")
    print(f"threads: {os.cpu_count()} CPUs; windows: {args.windows:,}")

    seed_n = args.seed_windows or args.windows
    model.predict([windows[:256], heads[:256]], batch_size=128, verbose=0)
    started = time.perf_counter()
    reconstruction = model.predict([windows[:seed_n], heads[:seed_n]], batch_size=128, verbose=0)
    seed_s = time.perf_counter() - started
    seed_rate = seed_n / seed_s
    print(f"(a) seed style, all heads + router, predict(batch_size=128): {seed_rate:,.0f} windows/s ({seed_s:.1f} s)")

    fast = HeadwiseReconstructor(model, args.batch)
    order = np.argsort(heads, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(heads[order])) + 1)
    for group in groups:
        fast.feature_errors(windows[group[:1]], int(heads[group[0]]))  # compile once per shape
    started = time.perf_counter()
    errors = np.empty((args.windows, n_features), np.float32)
    for group in groups:
        errors[group] = fast.feature_errors(windows[group], int(heads[group[0]]))
    fast_s = time.perf_counter() - started
    rate = args.windows / fast_s
    print(f"(b) head-wise, XLA, batch {args.batch}: {rate:,.0f} windows/s ({fast_s:.1f} s)")

    reference = ((reconstruction - windows[:seed_n]) ** 2).mean(axis=1)
    max_diff = float(np.abs(reference - errors[:seed_n]).max())
    print(f"max |difference| of per-feature errors between (a) and (b): {max_diff:.2e}")
    result = {
        "seed_style_windows_per_s": round(seed_rate, 1),
        "windows_per_s": round(rate, 1),
        "ratio": round(rate / seed_rate, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
