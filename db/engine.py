"""Engine creation with per-dialect tuning and credentials kept out of logs and files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from core.errors import PipelineError
from core.logs import mask_secrets


def resolve_url(url: str, env: Mapping[str, str] | None = None) -> sa.URL:
    """Parse the URL and inject a password from COMPRESSOR_AD_DB_PASSWORD(_FILE) if given."""
    env = os.environ if env is None else env
    try:
        parsed = make_url(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several types here
        raise PipelineError(f"invalid database URL {mask_secrets(url)!r}: {exc}") from exc
    password = env.get("COMPRESSOR_AD_DB_PASSWORD")
    password_file = env.get("COMPRESSOR_AD_DB_PASSWORD_FILE")
    if password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PipelineError(f"cannot read database password file {password_file}: {exc.strerror}") from exc
    if password:
        parsed = parsed.set(password=password)
    return parsed


def safe_url(url: str | sa.URL) -> str:
    """The URL as it may appear in logs: password replaced by ***."""
    if isinstance(url, sa.URL):
        return url.render_as_string(hide_password=True)
    return mask_secrets(url)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> sa.Engine:
    """Create an engine suited to the dialect (WAL for SQLite, fast_executemany for SQL Server)."""
    parsed = resolve_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict = {"pool_pre_ping": True}
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    elif backend == "mssql":
        kwargs["fast_executemany"] = True
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except Exception as exc:  # noqa: BLE001 - missing driver modules raise various errors
        raise PipelineError(f"cannot create a database engine for {safe_url(parsed)}: {exc}") from exc
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine
