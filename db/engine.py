"""Engine creation with per-dialect tuning and credentials kept out of logs and files."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from core.errors import PipelineError
from core.logs import mask_secrets

log = logging.getLogger(__name__)
_SECRET_QUERY_KEYS = {"password", "pwd", "passwd"}


def _read_password_file(path: Path) -> str:
    """The password in a file (surrounding whitespace removed); warns when others may read the file."""
    try:
        mode = path.stat().st_mode
        password = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise PipelineError(f"cannot read database password file {path}: {exc.strerror}") from exc
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
        who = "every user" if mode & stat.S_IROTH else "its group"
        log.warning("database password file %s is readable by %s (mode %03o); restrict it: chmod 600 %s", path, who, stat.S_IMODE(mode), path)
    if not password:
        raise PipelineError(f"database password file {path} is empty")
    return password


def resolve_url(url: str | sa.URL, env: Mapping[str, str] | None = None) -> sa.URL:
    """Parse the URL and set its password from COMPRESSOR_AD_DB_PASSWORD_FILE or COMPRESSOR_AD_DB_PASSWORD.

    The file wins over the variable; either wins over a password written in the URL.
    """
    env = os.environ if env is None else env
    try:
        parsed = make_url(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several types here
        raise PipelineError(f"invalid database URL {safe_url(str(url))!r}: {mask_secrets(str(exc))}") from None
    password = env.get("COMPRESSOR_AD_DB_PASSWORD")
    password_file = env.get("COMPRESSOR_AD_DB_PASSWORD_FILE")
    if password_file:
        password = _read_password_file(Path(password_file))
    if password:
        parsed = parsed.set(password=password)
    return parsed


def safe_url(url: str | sa.URL) -> str:
    """The URL as it may appear in logs (query values decoded): passwords, also inside ODBC strings, as ***."""
    if not isinstance(url, sa.URL):
        try:
            url = make_url(url)
        except Exception:  # noqa: BLE001 - not a URL: mask what looks like a secret
            return mask_secrets(url)
    shown = url.set(query={}).render_as_string(hide_password=True)
    pairs = [
        f"{key}={'***' if key.lower() in _SECRET_QUERY_KEYS else mask_secrets(value)}"
        for key, values in url.query.items()
        for value in (values if isinstance(values, tuple) else (values,))
    ]
    return shown + ("?" + "&".join(pairs) if pairs else "")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: keeps the index pages of bulk inserts in memory
    cursor.close()


def make_engine(url: str | sa.URL) -> sa.Engine:
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
        raise PipelineError(f"cannot create a database engine for {safe_url(parsed)}: {mask_secrets(str(exc))}") from None
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine
