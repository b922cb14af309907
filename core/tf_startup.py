"""Starting TensorFlow: its runtime defaults, its start-up lines into the log, and no Keras while it starts.

`runtime_defaults` sets what every process of the product starts TensorFlow with (log level, XLA's
vector width); it runs before the first import and before the compilation cache's key is taken
(models/compile_cache.py), so every process, however started, computes the same key.

TensorFlow's C++ runtime writes start-up lines straight to file descriptor 2 while it is imported,
past Python's logging. `import_tensorflow` imports it with that descriptor pointed at a temporary
file and hands each captured runtime line to the `compressor_ad.tensorflow` logger at DEBUG, so a
terminal or a JSON log sees only the pipeline's own lines; any other captured line (a Python log
record written meanwhile) goes back to stderr unchanged. Call it once, before any thread starts.

TensorFlow's own `__init__` imports Keras (for tf.keras's SavedModel registrations, which the
product does not use) inside a `try ... except ImportError`, and all of Keras 3 comes with it:
scikit-learn, SciPy's statistics, matplotlib (about 2 CPU-seconds and 150 MiB in a process that
only scores). `import_tensorflow` refuses the `keras` import while TensorFlow starts; a module that
needs Keras afterwards (training, a model version saved without its weights file) imports it as usual.
"""
from __future__ import annotations

import contextlib
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

log = logging.getLogger("compressor_ad.tensorflow")
# absl/glog lines (I0000 00:00:... file.cc:N] ...), absl's pre-init notice and the CPU-feature note's second line.
_RUNTIME_LINE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:|WARNING: All log messages before absl::|To enable the following instructions)")
_VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width=512"


def runtime_defaults() -> None:
    """TensorFlow's log level and XLA's flags, where the environment does not set them (idempotent)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_prefer_vector_width" not in flags:
        # Full-width AVX-512 vectors for XLA's CPU code where the CPU has them (about +10 % inference).
        os.environ["XLA_FLAGS"] = f"{flags} {_VECTOR_WIDTH_FLAG}".strip()


class _RefusedLoader:
    """An importlib loader whose module fails to execute (importlib.abc is not imported: it costs every command 60 ms)."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("keras is not imported while TensorFlow starts (core/tf_startup.py)")


class _KerasRefused:
    """Finds `keras` where it is installed (its origin, for TensorFlow's lookups) with a loader that refuses to import it."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        found = importlib.machinery.PathFinder.find_spec(name, path)
        return importlib.machinery.ModuleSpec(name, _RefusedLoader(), origin=found.origin if found else None, is_package=True)


def import_tensorflow() -> None:
    """Import TensorFlow, without Keras, its start-up output on fd 2 routed to the log (a no-op when already imported)."""
    if "tensorflow" in sys.modules:
        return
    runtime_defaults()
    finder = _KerasRefused()  # consulted only when keras is not imported yet
    sys.meta_path.insert(0, finder)
    try:
        with runtime_output_to_log():
            import tensorflow  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


@contextlib.contextmanager
def runtime_output_to_log() -> Iterator[None]:
    """Route the runtime's lines written to fd 2 meanwhile to the log at DEBUG (other lines back to stderr).

    Also used around the first call of a compiled function, whose executable loaded from the
    compilation cache makes XLA's loader note CPU tuning attributes (prefer-no-scatter, ...)
    as if they were missing CPU features.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        for line in captured.read().decode("utf-8", "replace").splitlines():
            if _RUNTIME_LINE.match(line):
                log.debug("%s", line.strip())
            elif line.strip():
                print(line, file=sys.stderr)
