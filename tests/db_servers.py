"""The database servers the tests run against, and a throwaway database on each for one test.

CI provides PostgreSQL and MariaDB (URLs below, or COMPRESSOR_AD_TEST_POSTGRESQL_URL and
COMPRESSOR_AD_TEST_MARIADB_URL). A server that cannot be reached fails the test with the reason:
these tests are the proof that the pipeline works on that database, so they never skip.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from db.engine import safe_url
from db.scratch import scratch_database

SERVER_URLS = {
    "postgresql": ("COMPRESSOR_AD_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    "mariadb": ("COMPRESSOR_AD_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
KINDS = ("sqlite", "postgresql", "mariadb")


def server_url(kind: str) -> str:
    variable, default = SERVER_URLS[kind]
    return os.environ.get(variable) or default


def require_server(kind: str) -> str:
    """The server's URL, or a test failure that says which server is missing and how to point at one."""
    url = server_url(kind)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any reason the server cannot be used
        variable = SERVER_URLS[kind][0]
        pytest.fail(
            f"{kind} server at {safe_url(url)} is unreachable ({str(exc).splitlines()[0]}). "
            f"These tests need it (CI provides it): start it or set {variable} to a reachable server.",
            pytrace=False,
        )
    finally:
        engine.dispose()
    return url


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """URL of an empty database of this kind, dropped afterwards (SQLite: a file in `folder`)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'test.sqlite'}"
        return
    with scratch_database(require_server(kind), "test") as url:
        yield url


def sql_statements(path: Path) -> list[str]:
    """The statements of one of the sql/ files: `GO` separates batches (SQL Server), else `;` ends a
    statement (not inside a $$-quoted PostgreSQL block); comment lines are dropped."""
    text = path.read_text(encoding="utf-8")
    statements, current, dollar_quoted = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("--") or not line.strip():
            continue
        if path.parent.name == "mssql":
            if line.strip().upper() == "GO":
                statements.append("\n".join(current))
                current = []
            else:
                current.append(line)
            continue
        current.append(line)
        dollar_quoted ^= line.count("$$") % 2 == 1
        if line.rstrip().endswith(";") and not dollar_quoted:
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current))
    return statements
