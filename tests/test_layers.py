"""The layers contract in pyproject.toml ([tool.importlinter]) holds: every import points downwards."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_layers_import_only_downwards():
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    if done.returncode:
        pytest.fail(f"lint-imports found imports that point upwards:\n{done.stdout}{done.stderr}", pytrace=False)
    assert "Layers import only downwards KEPT" in done.stdout
