"""db/engine.py: passwords from the environment or a file, never in logs; per-dialect engine set-up."""
from __future__ import annotations

import logging
import os
from urllib.parse import quote_plus

import pytest
import sqlalchemy as sa

from core.errors import PipelineError
from db.engine import make_engine, resolve_url, safe_url
from db_servers import require_server
from db.scratch import scratch_database
from scheduler.cli import main

SECRET = "Pa55-w0rd!secret"
URL = "postgresql+psycopg://scheduler_svc@db.plant.local:5432/telemetry"


def _password_file(tmp_path, mode: int, text: str = SECRET + "\n"):
    path = tmp_path / "db-password"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_password_from_the_environment():
    url = resolve_url(URL, env={"COMPRESSOR_AD_DB_PASSWORD": SECRET})
    assert url.password == SECRET and url.username == "scheduler_svc" and url.host == "db.plant.local"


def test_without_password_settings_the_url_is_unchanged():
    assert resolve_url(URL, env={}).password is None
    assert resolve_url("sqlite:///var/x.sqlite", env={}).database == "var/x.sqlite"


def test_password_from_a_private_file(tmp_path, caplog):
    path = _password_file(tmp_path, 0o600)
    with caplog.at_level(logging.WARNING):
        url = resolve_url(URL, env={"COMPRESSOR_AD_DB_PASSWORD_FILE": str(path)})
    assert url.password == SECRET  # the trailing newline is not part of it
    assert caplog.records == []


def test_the_file_wins_over_the_variable(tmp_path):
    path = _password_file(tmp_path, 0o600)
    env = {"COMPRESSOR_AD_DB_PASSWORD": "other", "COMPRESSOR_AD_DB_PASSWORD_FILE": str(path)}
    assert resolve_url(URL, env=env).password == SECRET


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX permissions")
@pytest.mark.parametrize("mode, who", [(0o644, "every user"), (0o640, "its group")])
def test_a_password_file_others_can_read_is_warned_about(tmp_path, caplog, mode, who):
    path = _password_file(tmp_path, mode)
    with caplog.at_level(logging.WARNING, logger="db.engine"):
        assert resolve_url(URL, env={"COMPRESSOR_AD_DB_PASSWORD_FILE": str(path)}).password == SECRET
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1
    assert f"readable by {who}" in messages[0] and f"chmod 600 {path}" in messages[0]
    assert SECRET not in messages[0]


def test_missing_or_empty_password_file_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="cannot read database password file .*nope"):
        resolve_url(URL, env={"COMPRESSOR_AD_DB_PASSWORD_FILE": str(tmp_path / "nope")})
    empty = _password_file(tmp_path, 0o600, "\n")
    with pytest.raises(PipelineError, match="password file .* is empty"):
        resolve_url(URL, env={"COMPRESSOR_AD_DB_PASSWORD_FILE": str(empty)})


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://alice:{SECRET}@db/plant",
        sa.URL.create("postgresql+psycopg", "alice", SECRET, "db", database="plant"),
        "mssql+pyodbc:///?odbc_connect=" + quote_plus(f"DRIVER={{ODBC Driver 18 for SQL Server}};SERVER=sql01;UID=alice;PWD={SECRET};Encrypt=yes"),
        f"mysql+pymysql://alice@db/plant?password={quote_plus(SECRET)}",
        f"not a url, but password={SECRET}",
    ],
)
def test_urls_are_logged_without_passwords(url):
    shown = safe_url(url)
    assert SECRET not in shown and quote_plus(SECRET) not in shown
    assert "***" in shown


def test_make_engine_sets_up_each_dialect(tmp_path):
    sqlite = make_engine(f"sqlite:///{tmp_path / 'sub' / 'x.sqlite'}")
    with sqlite.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    sqlite.dispose()
    mssql = make_engine("mssql+pyodbc://alice@sql01/plant?driver=ODBC+Driver+18+for+SQL+Server")
    assert mssql.dialect.fast_executemany is True


def test_sql_server_through_freetds_loads_the_driver(monkeypatch):
    """pyodbc imports (unixodbc present) and the FreeTDS driver answers: here with 'server unavailable',
    as nothing listens on port 1. Install them with `make system-deps` (apt: unixodbc tdsodbc)."""
    monkeypatch.setenv("COMPRESSOR_AD_DB_PASSWORD", SECRET)
    engine = make_engine("mssql+pyodbc://sa@127.0.0.1/master?driver=FreeTDS&Port=1&TDS_Version=7.4&LoginTimeout=2")
    (connect_string,), _ = engine.dialect.create_connect_args(engine.url)
    assert connect_string.startswith("DRIVER={FreeTDS};Server=127.0.0.1;Database=master;UID=sa;PWD=")
    assert "Port=1;TDS_Version=7.4" in connect_string
    with pytest.raises(sa.exc.DBAPIError) as caught:
        with engine.connect():
            pass
    assert "[FreeTDS]" in str(caught.value) and SECRET not in str(caught.value)
    engine.dispose()


@pytest.mark.slow
def test_a_real_session_never_logs_the_password(tmp_path, monkeypatch, capsys, caplog):
    """Status against PostgreSQL with the password in the URL and in the environment (the local
    server trusts the login, so any password connects): no log line or output shows it."""
    with scratch_database(require_server("postgresql"), "test") as scratch:
        url = sa.make_url(scratch).set(password=SECRET).render_as_string(hide_password=False)
        monkeypatch.setenv("COMPRESSOR_AD_DB_PASSWORD", SECRET)
        with caplog.at_level(logging.DEBUG):
            assert main(["--log-level", "DEBUG", "--db-url", url, "simulate", "--compressors", "1", "--days", "0.02"]) == 0
            assert main(["--log-level", "DEBUG", "--db-url", url, "status"]) == 0
        captured = capsys.readouterr()
        everything = captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records)
        assert "C01" in captured.out
        assert SECRET not in everything and quote_plus(SECRET) not in everything
