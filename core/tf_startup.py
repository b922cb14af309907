"""TensorFlow's start-up lines (absl pre-init notice, oneDNN and CPU-feature notes) into the log.

TensorFlow's C++ runtime writes them straight to file descriptor 2 while it is imported, past
Python's logging. `import_tensorflow` imports it with that descriptor pointed at a temporary file
and hands each captured runtime line to the `compressor_ad.tensorflow` logger at DEBUG, so a
terminal or a JSON log sees only the pipeline's own lines; any other captured line (a Python log
record written meanwhile) goes back to stderr unchanged. Call it once, before any thread starts.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

log = logging.getLogger("compressor_ad.tensorflow")
# absl/glog lines (I0000 00:00:... file.cc:N] ...), absl's pre-init notice and the CPU-feature note's second line.
_RUNTIME_LINE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:|WARNING: All log messages before absl::|To enable the following instructions)")


def import_tensorflow() -> None:
    """Import TensorFlow with its start-up output on fd 2 routed to the log (a no-op when already imported)."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
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
