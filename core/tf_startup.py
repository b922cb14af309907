"""TensorFlow's start-up lines (absl pre-init notice, oneDNN and CPU-feature notes) into the log.

TensorFlow's C++ runtime writes them straight to file descriptor 2 while it is imported, past
Python's logging. `import_tensorflow` imports it with that descriptor pointed at a temporary file
and hands each captured runtime line to the `compressor_ad.tensorflow` logger at DEBUG, so a
terminal or a JSON log sees only the pipeline's own lines; any other captured line (a Python log
record written meanwhile) goes back to stderr unchanged. Call it once, before any thread starts.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

log = logging.getLogger("compressor_ad.tensorflow")
# absl/glog lines (I0000 00:00:... file.cc:N] ...), absl's pre-init notice and the CPU-feature note's second line.
_RUNTIME_LINE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:|WARNING: All log messages before absl::|To enable the following instructions)")


def import_tensorflow() -> None:
    """Import TensorFlow with its start-up output on fd 2 routed to the log (a no-op when already imported)."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with runtime_output_to_log():
        import tensorflow  # noqa: F401


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
