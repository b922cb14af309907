"""Throwaway databases for tests and benchmarks: created on the server of a URL, dropped afterwards.

PostgreSQL: CREATE DATABASE through an AUTOCOMMIT connection to `postgres`; MariaDB/MySQL:
CREATE DATABASE; SQL Server: CREATE DATABASE through `master`; SQLite: a new file next to the
URL's file (or in the temporary folder).
"""
from __future__ import annotations

import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from core.errors import PipelineError
from db.engine import resolve_url, safe_url
from db.identifiers import check_identifier

_ADMIN_DATABASE = {"postgresql": "postgres", "mysql": None, "mariadb": None, "mssql": "master"}


@contextmanager
def scratch_database(url: str, prefix: str = "scratch") -> Iterator[str]:
    """Yield the URL of a new, empty database on the same server; drop it on exit."""
    parsed = resolve_url(url)
    name = check_identifier(f"{prefix}_{uuid.uuid4().hex[:12]}", "scratch database name")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        folder = Path(parsed.database).parent if parsed.database and parsed.database != ":memory:" else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.sqlite"
        try:
            yield parsed.set(database=str(path)).render_as_string(hide_password=False)
        finally:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
        return
    if backend not in _ADMIN_DATABASE:
        raise PipelineError(f"no scratch databases on {backend}")
    admin = sa.create_engine(parsed.set(database=_ADMIN_DATABASE[backend]), isolation_level="AUTOCOMMIT")
    # DDL on databases takes no bind parameters: the name is made above from a random hex string, checked and quoted.
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    except sa.exc.DBAPIError as exc:
        admin.dispose()
        raise PipelineError(f"cannot create a scratch database on {safe_url(parsed)}: {str(exc).splitlines()[0]}") from exc
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            elif backend == "mssql":
                conn.exec_driver_sql(f"ALTER DATABASE {quoted} SET SINGLE_USER WITH ROLLBACK IMMEDIATE")
                conn.exec_driver_sql(f"DROP DATABASE {quoted}")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")
        admin.dispose()
