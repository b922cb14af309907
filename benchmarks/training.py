"""Training throughput of the compressor-aware autoencoder (head-wise batches, XLA).

    python benchmarks/training.py [--compressors 5] [--windows-per-compressor 8000] [--epochs 3]
    python benchmarks/training.py --rows 10000000 [--compressors 4] [--max-windows 50000] [--db-url URL]

Builds random-walk windows per compressor, trains for a few epochs with the production
trainer and prints training windows/s (first epoch, which includes compilation, excluded),
peak resident memory, and one JSON line.

With --rows N it writes N random-walk rows into a temporary SQLite database (or --db-url) and
runs the production path from the database instead: streamed training data (an evenly strided
sample of at most --max-windows windows per compressor, scaler statistics over all rows),
training and calibration; it prints rows, training windows/s, wall time and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core.settings import DEFAULT_FEATURES, load_settings, with_section  # noqa: E402
from models.autoencoder import build_autoencoder  # noqa: E402
from models.trainer import HeadData, HeadwiseTrainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compressors", type=int, default=5)
    parser.add_argument("--windows-per-compressor", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rows", type=int, default=0, help="train from a database of this many rows")
    parser.add_argument("--max-windows", type=int, default=50_000, help="training.max_windows_per_compressor with --rows")
    parser.add_argument("--db-url", default=None, help="database for --rows (default: a temporary SQLite file)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            from_database(args, args.db_url or f"sqlite:///{Path(tmp) / 'rows.sqlite'}", tmp)
        return

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


def write_rows(db_url: str, rows: int, compressors: int, chunk: int = 200_000) -> None:
    """`rows` random-walk rows at the sampling interval, split evenly over the compressors."""
    from db.engine import make_engine
    from db.schema import build_tables, create_all
    from db.source import write_telemetry

    settings = load_settings(None, env={}, db_url=db_url)
    engine, tables = make_engine(db_url), build_tables(settings)
    create_all(engine, tables)
    rng = np.random.default_rng(0)
    per_compressor = rows // compressors
    features = settings.data.features
    for head in range(compressors):
        level = np.zeros(len(features))
        for offset in range(0, per_compressor, chunk):
            n = min(chunk, per_compressor - offset)
            values = level + np.cumsum(rng.normal(scale=0.05, size=(n, len(features))), axis=0)
            level = values[-1]
            frame = pd.DataFrame(values, columns=list(features))
            seconds = (offset + np.arange(n)) * settings.data.sampling_interval_s
            frame.insert(0, "timestamp", pd.Timestamp("2020-01-01") + pd.to_timedelta(seconds, unit="s"))
            frame.insert(1, "compressor_id", f"C{head + 1:02d}")
            frame["label"] = 0
            write_telemetry(engine, tables, frame)
    engine.dispose()


def from_database(args, db_url: str, tmp: str) -> None:
    """Write --rows rows (in a child process, so that peak RSS is that of training alone), then
    load, train and calibrate from the database as `train` does."""
    from db.engine import make_engine
    from db.schema import build_tables
    from models.training import train_bundle
    from pipeline.training_data import load_training_data

    settings = load_settings(None, env={}, db_url=db_url, model_dir=str(Path(tmp) / "models"))
    settings = with_section(
        settings, "training", epochs=args.epochs, patience=args.epochs + 1, batch_size=args.batch, max_windows_per_compressor=args.max_windows
    )
    started = time.perf_counter()
    writer = multiprocessing.get_context("spawn").Process(target=write_rows, args=(db_url, args.rows, args.compressors))
    writer.start()
    writer.join()
    if writer.exitcode:
        raise SystemExit(f"writing rows failed (exit code {writer.exitcode})")
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    written_s = time.perf_counter() - started
    print(f"wrote {args.rows:,} rows ({args.compressors} compressors) in {written_s:.1f} s")
    started = time.perf_counter()
    sets, moments = load_training_data(engine, tables, settings, None, None)
    loaded_s = time.perf_counter() - started
    started = time.perf_counter()
    train_bundle(sets, settings, (None, None), moments)
    trained_s = time.perf_counter() - started
    windows = sum(len(ws) for ws in sets.values())
    rate = windows * args.epochs / trained_s
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"streamed {args.rows:,} rows to {windows:,} training windows in {loaded_s:.1f} s")
    print(f"trained {args.epochs} epoch(s) and calibrated in {trained_s:.1f} s: {rate:,.0f} training windows/s; peak RSS {peak:,.0f} MB")
    print(
        json.dumps(
            {
                "rows": args.rows,
                "training_windows": windows,
                "training_windows_per_s": round(rate, 1),
                "load_s": round(loaded_s, 1),
                "train_s": round(trained_s, 1),
                "wall_s": round(loaded_s + trained_s, 1),
                "peak_rss_mb": round(peak, 1),
            }
        )
    )
    engine.dispose()


if __name__ == "__main__":
    main()
