"""float32 vs bfloat16 matrix products of the LSTM's shapes on this CPU: `python benchmarks/matmul_precision.py`.

The question behind an opt-in bfloat16 mode (issue 18): does this CPU multiply bfloat16 faster, and
where? Each of the network's recurrent products (a batch of rows times [input + hidden] x 4·hidden)
is timed in TensorFlow outside XLA (oneDNN kernels) and inside an XLA-compiled function, in both
precisions. Prints rows/s per shape and path and ends with one JSON line of the same figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from models.autoencoder import DECODER_UNITS, ENCODER_UNITS  # noqa: E402


def shapes(n_features: int) -> dict[str, tuple[int, int]]:
    """name -> (input + hidden, 4 x hidden) of each LSTM layer."""
    enc1, enc2 = ENCODER_UNITS
    dec1, dec2 = DECODER_UNITS
    return {
        f"encoder 1 ({n_features}+{enc1} -> {4 * enc1})": (n_features + enc1, 4 * enc1),
        f"encoder 2 ({enc1}+{enc2} -> {4 * enc2})": (enc1 + enc2, 4 * enc2),
        f"decoder 1 ({enc2}+{dec1} -> {4 * dec1})": (enc2 + dec1, 4 * dec1),
        f"decoder 2 ({dec1}+{dec2} -> {4 * dec2})": (dec1 + dec2, 4 * dec2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="rows per product (windows of one batch)")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--features", type=int, default=17)
    args = parser.parse_args(argv)
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    results: dict[str, dict[str, int]] = {}
    for name, (k, n) in shapes(args.features).items():
        a, b = rng.normal((args.rows, k)), rng.normal((k, n))
        rates = {}
        for dtype in (tf.float32, tf.bfloat16):
            x, w = tf.cast(a, dtype), tf.cast(b, dtype)
            for jit in (False, True):
                product = tf.function(lambda p, q: tf.matmul(p, q), jit_compile=jit, autograph=False)
                product(x, w).numpy()
                started = time.perf_counter()
                for _ in range(args.repeats):
                    out = product(x, w)
                out.numpy()
                rates[f"{dtype.name}{'_xla' if jit else ''}"] = round(args.repeats * args.rows / (time.perf_counter() - started))
        results[name] = rates
        print(f"{name:<32} " + "  ".join(f"{k} {v:,} rows/s" for k, v in rates.items()), flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
