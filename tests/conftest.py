"""Shared fixtures: settings on a temporary SQLite database, a tiny simulated fleet, a tiny trained model.

Test tiers: `slow` marks every test that trains a model, starts a subprocess or a server, or needs
PostgreSQL / MariaDB; `pytest -m "not slow"` (make test-fast) runs the rest. Whole modules of such
tests are listed in SLOW_MODULES, tests on the session's trained fleet or on a database server
(parameter `kind`) are marked here, single tests elsewhere carry @pytest.mark.slow. Under exactly
`-m "not slow"` the SLOW_MODULES are not even imported (some import TensorFlow at the top).
"""
from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# NumPy's BLAS on one thread, as in the product's scoring processes (core/threads.py), so that a window scored
# here and one scored by a `run` subprocess take the same kernels; set before NumPy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("COMPRESSOR_AD_COMPILE_CACHE", "0")  # models/compile_cache.py: no warm-up after each `train` in tests

from core.settings import Settings, load_settings, with_section  # noqa: E402

START = datetime(2026, 1, 1)

# Modules whose tests (all, or all but a few quick ones) train a model, start a subprocess or a server,
# or need a database server.
SLOW_MODULES = {
    "test_alert_delivery", "test_alert_episodes", "test_alert_rules", "test_api_edges", "test_api_schema",
    "test_artifacts", "test_autoencoder", "test_backfill", "test_bad_inputs", "test_calibrate", "test_cold_start",
    "test_concurrency", "test_dashboard_sql", "test_dask", "test_dead_lease", "test_end_to_end", "test_evaluate",
    "test_exactly_once", "test_hostile_batches", "test_late_rows", "test_metrics_endpoint", "test_mssql_container",
    "test_notifications", "test_scoring", "test_service", "test_skab_harness", "test_tracking", "test_training",
}
SERVER_KINDS = ("postgresql", "mariadb")


def pytest_ignore_collect(collection_path, config):
    if config.getoption("markexpr") == "not slow" and collection_path.stem in SLOW_MODULES:
        return True
    return None


def pytest_collection_modifyitems(items):
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            item.module.__name__.rpartition(".")[2] in SLOW_MODULES
            or "trained_fleet" in item.fixturenames
            or params.get("kind") in SERVER_KINDS
        ):
            item.add_marker(pytest.mark.slow)


def tiny_settings(tmp_path, db_url: str | None = None, **training) -> Settings:
    """Settings for fast tests: a file database under tmp_path, a few short training epochs."""
    settings = load_settings(None, env={}, db_url=db_url or f"sqlite:///{tmp_path / 'test.sqlite'}", model_dir=str(tmp_path / "models"))
    params = {"epochs": 3, "batch_size": 128, "patience": 2, "window_stride": 3, **training}
    return with_section(settings, "training", **params)


@pytest.fixture(autouse=True)
def restore_logging():
    """main() configures the root logger for the process; put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return tiny_settings(tmp_path)


@pytest.fixture(scope="session")
def trained_fleet(tmp_path_factory):
    """A 3-compressor, 2-day fleet on SQLite with a model trained on day 1 (shared by read-only tests)."""
    from db.engine import make_engine
    from db.schema import build_tables, create_all
    from db.source import write_telemetry
    from pipeline.publish import train_and_publish
    from simulation.fleet import simulate_fleet

    tmp = tmp_path_factory.mktemp("fleet")
    settings = tiny_settings(tmp)
    fleet = simulate_fleet(3, 2.0, start=START, seed=11)
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    create_all(engine, tables)
    write_telemetry(engine, tables, fleet.telemetry)
    train_end = START + timedelta(days=1)
    bundle = train_and_publish(engine, tables, settings, START, train_end)
    engine.dispose()
    return {"settings": settings, "fleet": fleet, "bundle": bundle, "train_end": train_end, "dir": tmp}


def copy_of_trained_fleet(trained_fleet: dict, tmp_path) -> Settings:
    """The shared trained fleet's database and model directory copied under tmp_path (for tests that write)."""
    import shutil

    settings = trained_fleet["settings"]
    db = tmp_path / "fleet.sqlite"
    shutil.copy(settings.db_url.removeprefix("sqlite:///"), db)
    shutil.copytree(settings.model_dir, tmp_path / "models")
    return settings.replace(db_url=f"sqlite:///{db}", model_dir=tmp_path / "models")
