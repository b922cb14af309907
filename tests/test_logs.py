"""Logs: JSON lines parse as JSON, and a database password never reaches the log output."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.logs import mask_secrets, setup_logging

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Tr0ub4dor-and-3"
URL = f"postgresql+psycopg://scheduler:{PASSWORD}@db.example:5432/telemetry"


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def emit_with_secrets(log: logging.Logger) -> None:
    log.info("connecting to %s", URL)
    log.warning("odbc: DRIVER={ODBC Driver 18 for SQL Server};SERVER=sql;UID=sa;PWD=%s;", PASSWORD)
    try:
        raise ConnectionError(f"could not connect to {URL}")
    except ConnectionError:
        log.exception("run failed")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_password_never_reaches_the_log(fmt, tmp_path, capsys, restore_logging):
    log_file = tmp_path / "logs" / "scheduler.log"
    setup_logging("INFO", fmt, log_file)
    emit_with_secrets(logging.getLogger("compressor_ad.test"))
    for handler in logging.getLogger().handlers:
        handler.flush()
    written = log_file.read_text(encoding="utf-8")
    printed = capsys.readouterr().err
    for output in (written, printed):
        assert PASSWORD not in output
        assert "scheduler:***@db.example" in output and "PWD=***" in output
        assert "ConnectionError: could not connect to postgresql+psycopg://scheduler:***@" in output


def test_json_lines_are_valid_json(tmp_path, restore_logging):
    log_file = tmp_path / "scheduler.log"
    setup_logging("INFO", "json", log_file)
    emit_with_secrets(logging.getLogger("compressor_ad.test"))
    logging.getLogger("compressor_ad.test").info('quotes " and \\ and newline\n and unicode \u00b0C')
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = log_file.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert [r["level"] for r in records] == ["INFO", "WARNING", "ERROR", "INFO"]
    assert "exception" in records[2] and PASSWORD not in records[2]["exception"]
    assert records[3]["message"] == 'quotes " and \\ and newline\n and unicode \u00b0C'


def test_mask_secrets_forms():
    assert mask_secrets(URL) == "postgresql+psycopg://scheduler:***@db.example:5432/telemetry"
    assert mask_secrets("Server=sql;Pwd=abc;Uid=sa") == "Server=sql;Pwd=***;Uid=sa"
    assert mask_secrets("api_key=k3y&x=1") == "api_key=***&x=1"
    assert mask_secrets("sqlite:///var/compressor_ad.sqlite") == "sqlite:///var/compressor_ad.sqlite"


@pytest.mark.slow
def test_cli_failure_with_a_password_in_the_url_logs_json_without_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_AD_")}
    url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/test?connect_timeout=5"
    done = subprocess.run(
        [sys.executable, "run_scheduler.py", "--db-url", url, "--log-format", "json", "--log-level", "DEBUG",
         "--log-file", str(tmp_path / "cli.log"), "status"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    assert PASSWORD not in done.stdout + done.stderr
    assert PASSWORD not in (tmp_path / "cli.log").read_text(encoding="utf-8")
    logged = [json.loads(line) for line in (tmp_path / "cli.log").read_text(encoding="utf-8").splitlines()]
    assert any(r["message"] == "command failed" and "OperationalError" in r.get("exception", "") for r in logged)
    assert done.stderr.strip().splitlines()[-1].startswith("error: database:")
