"""The full pipeline (simulate -> train -> run -> backfill -> status) on SQLite, PostgreSQL and MariaDB.

Each database test runs in its own database, created for it and dropped afterwards
(tests/db_servers.py). An unreachable server fails the test, naming the server.
"""
from __future__ import annotations

import pytest

from db_servers import KINDS, database
from pipeline_flow import Trained, check_pipeline, train_once


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """Trained once, on SQLite, through the command line; the other databases reuse the model."""
    return train_once(tmp_path_factory.mktemp("trained"))


@pytest.mark.parametrize("kind", KINDS)
def test_full_pipeline(kind, trained, tmp_path, capsys):
    with database(kind, tmp_path) as url:
        check_pipeline(url, trained, capsys)
