"""Persistent XLA compilation cache next to the model versions: MODEL_DIR/compile-cache/<version>-<key>/.

A process that backfills (a call of more than NUMPY_UP_TO windows, models/inference.py) would spend
most of its first batch compiling the XLA graph of models/xla_graph.py. TensorFlow's persistent
cache saves each XLA executable it compiles in a directory (a protocol buffer of machine code, never
a Python object) and a later process loads it instead. <key> hashes what the machine code depends on
besides the graph: the TensorFlow version, the CPU (model name and feature flags) and the XLA flags;
the version name keeps each model version's entries apart, so `models warm` can remove the entries
of versions that are gone. Hourly runs score in NumPy and never start TensorFlow: loading a version
only points TF_XLA_FLAGS at its directory (`use_cache`), which TensorFlow reads if and when it starts
(after it has started, `use_cache` changes nothing). COMPRESSOR_AD_COMPILE_CACHE=0 turns the cache off.

The cache runs machine code found on disk: give the directory the same protection as the model
versions themselves.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from core.tf_startup import runtime_defaults

log = logging.getLogger(__name__)

CACHE_DIR_NAME = "compile-cache"
ENV_SWITCH = "COMPRESSOR_AD_COMPILE_CACHE"
_FLAG = "--tf_xla_persistent_cache_directory"
_in_use: list[Path] = []  # the directory this process set in TF_XLA_FLAGS (at most one)


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu_identity() -> str:
    """CPU model name and feature flags (Linux /proc/cpuinfo; elsewhere what platform reports)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    wanted = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    first = text.split("\n\n", 1)[0]
    return "\n".join(line for line in first.splitlines() if line.split(":", 1)[0].strip() in wanted)


def machine_key() -> str:
    """16 hex digits that change with the TensorFlow version, the CPU or the XLA flags."""
    try:
        tf_version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        tf_version = "unknown"
    parts = (tf_version, platform.machine(), _cpu_identity(), os.environ.get("XLA_FLAGS", ""), os.environ.get("TF_XLA_FLAGS", ""))
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:16]


def cache_dir(model_dir: Path, version: str) -> Path:
    """The cache of `version` on this machine, under the flags TensorFlow starts with (core/tf_startup.py `runtime_defaults`)."""
    runtime_defaults()  # a process that inherited them and one that sets them take the same key
    return Path(model_dir) / CACHE_DIR_NAME / f"{version}-{machine_key()}"


def use_cache(model_dir: Path, version: str) -> Path | None:
    """Point TensorFlow's persistent cache at `version`'s directory for when TensorFlow starts (the directory; None when not used).

    Starts nothing: TensorFlow is imported only when the XLA graph is needed (models/inference.py).
    A later call (another version loaded before TensorFlow started) replaces this process's own
    directory, never one the operator set in TF_XLA_FLAGS.
    """
    if "tensorflow" in sys.modules or not enabled():
        return None
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if _in_use:
        flags = flags.replace(f"{_FLAG}={_in_use.pop()}", "").strip()
    if _FLAG in flags:  # the operator's own cache directory wins
        return None
    directory = cache_dir(model_dir, version)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("compilation cache %s cannot be created (%s): compiling from scratch", directory, exc)
        os.environ["TF_XLA_FLAGS"] = flags
        return None
    os.environ["TF_XLA_FLAGS"] = f"{flags} {_FLAG}={directory}".strip()
    _in_use.append(directory)
    log.debug("compilation cache %s (%d entries)", directory, _entries(directory)[0])
    return directory


def _entries(directory: Path) -> tuple[int, int]:
    files = [p for p in directory.iterdir() if p.is_file()] if directory.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def warm(model_dir: Path, version: str) -> None:
    """Compile `version`'s XLA graph into its cache now (train, models promote, models warm); drop the caches of versions that are gone."""
    from models.artifacts import load_bundle, versions_dir
    from models.registry import detector_kind

    if not enabled():
        log.info("compilation cache off (%s=0): nothing to warm", ENV_SWITCH)
        return
    started = time.perf_counter()
    bundle = load_bundle(model_dir, version)
    if not detector_kind(bundle.detector.name).uses_tensorflow:
        return
    directory = _in_use[-1] if _in_use else None
    if directory is None or not directory.name.startswith(f"{version}-"):
        log.warning("TensorFlow was already started in this process: the compilation cache of %s was not written", version)
        return
    bundle.detector.reconstructor.compile_xla()  # starts TensorFlow with the directory load_bundle set
    existing = {p.name for p in versions_dir(model_dir).iterdir()} if versions_dir(model_dir).is_dir() else set()
    for stale in directory.parent.iterdir():
        if stale.is_dir() and stale.name.rsplit("-", 1)[0] not in existing:
            shutil.rmtree(stale, ignore_errors=True)
    count, size = _entries(directory)
    log.info("compilation cache of %s warm in %.1f s: %d entries, %.1f MB in %s", version, time.perf_counter() - started, count, size / 1e6, directory)
