"""The layers contract in pyproject.toml ([tool.importlinter]) holds: every import points downwards."""
import sys
from pathlib import Path

import pytest
from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_layers_import_only_downwards(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))  # lint_imports puts the working directory first
    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    if code != EXIT_STATUS_SUCCESS:
        pytest.fail(f"lint-imports found imports that point upwards:\n{report}", pytrace=False)
    assert "Layers import only downwards KEPT" in report
