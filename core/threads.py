"""CPU threads for TensorFlow and NumPy: how many this process may use, and one-thread kernels for scoring."""
from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def use_single_threaded_kernels() -> None:
    """Run each TensorFlow kernel and each NumPy BLAS call on one thread; call before TensorFlow or NumPy is first imported.

    For scoring-only processes (run, backfill, serve, evaluate): the inference threads of
    models/inference.py and the runner's compressor threads then use one core each instead of
    contending for the same cores (an hour of 10 compressors in NumPy: about 0.3 CPU-s on one BLAS
    thread, about 2-3 CPU-s on two). Training keeps the defaults. Values the operator set in the
    environment win.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(available_cpus()))
