"""The layers contract in pyproject.toml ([tool.importlinter]) holds: every import points downwards."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_layers_import_only_downwards():
    # A process of its own: import-linter's console binds the streams of the process it runs in,
    # which under pytest are capture files that a later test closes.
    done = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"lint-imports found imports that point upwards:\n{done.stdout}{done.stderr}", pytrace=False)
    assert "Layers import only downwards KEPT" in done.stdout
