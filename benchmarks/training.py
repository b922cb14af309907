"""Training throughput of the compressor-aware autoencoder (head-wise batches, XLA).

    python benchmarks/training.py [--compressors 5] [--windows-per-compressor 8000] [--epochs 3]

Builds random-walk windows per compressor, trains for a few epochs with the production
trainer and prints training windows/s (first epoch, which includes compilation, excluded),
peak resident memory, and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from core.settings import DEFAULT_FEATURES  # noqa: E402
from models.autoencoder import build_autoencoder  # noqa: E402
from models.trainer import HeadData, HeadwiseTrainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compressors", type=int, default=5)
    parser.add_argument("--windows-per-compressor", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rng = np.random.default_rng(0)
    n_features, window = len(DEFAULT_FEATURES), 30
    data = []
    for head in range(args.compressors):
        walk = np.cumsum(rng.normal(size=(args.windows_per_compressor + window, n_features)), axis=0).astype(np.float32)
        walk = (walk - walk.mean(0)) / walk.std(0)
        windows = np.lib.stride_tricks.sliding_window_view(walk, window, axis=0).transpose(0, 2, 1)[: args.windows_per_compressor]
        cut = int(0.85 * len(windows))
        data.append(HeadData(head, np.ascontiguousarray(windows[:cut]), np.ascontiguousarray(windows[cut:])))
    model = build_autoencoder(args.compressors, window, n_features)
    trainer = HeadwiseTrainer(model, 1e-3, args.batch)

    epoch_times = []
    original_info = logging.getLogger("models.trainer").info
    started = [time.perf_counter()]

    def timed(*a, **k):
        epoch_times.append(time.perf_counter() - started[0])
        started[0] = time.perf_counter()
        original_info(*a, **k)

    logging.getLogger("models.trainer").info = timed
    trainer.fit(data, args.epochs, patience=args.epochs + 1, seed=0)
    per_epoch = sum(len(d.train) // min(args.batch, len(d.train)) * min(args.batch, len(d.train)) for d in data)
    steady = epoch_times[1:] or epoch_times
    rate = per_epoch / (sum(steady) / len(steady))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"training: {args.compressors} heads, {per_epoch:,} windows per epoch, batch {args.batch}")
    print(f"first epoch (with compilation): {epoch_times[0]:.1f} s; steady epochs: {np.mean(steady):.1f} s")
    print(f"training throughput: {rate:,.0f} windows/s (forward + backward + update); peak RSS {peak:,.0f} MB")
    print(json.dumps({"training_windows_per_s": round(rate, 1), "epochs": args.epochs, "peak_rss_mb": round(peak, 1)}))


if __name__ == "__main__":
    main()
