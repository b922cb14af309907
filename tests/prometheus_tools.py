"""The Prometheus binaries the alerting tests run (Debian packages prometheus,
prometheus-pushgateway, prometheus-alertmanager; `make system-deps` installs them)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def require(*names: str) -> dict[str, str]:
    """name -> path of each binary; skip where they cannot be installed, fail where they could."""
    missing = [n for n in names if shutil.which(n) is None]
    if not missing:
        return {n: shutil.which(n) for n in names}
    listed = ", ".join(missing)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") and Path("/etc/debian_version").is_file():
        pytest.fail(f"{listed} not installed: run `make system-deps` (it installs prometheus, prometheus-pushgateway and prometheus-alertmanager)")
    pytest.skip(f"{listed} not installed, and not root on Debian here so `make system-deps` cannot install them")
