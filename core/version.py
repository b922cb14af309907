"""The product's version, written here only: pyproject.toml and `run_scheduler.py --version` read it."""

__version__ = "0.1.0"
