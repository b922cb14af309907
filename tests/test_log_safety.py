"""Log lines under hostile input: masking is linear and bounded, control characters cannot forge a
line, JSON records carry filterable fields, and a command's failure reaches --log-file."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from core.logs import MAX_MESSAGE_CHARS, mask_secrets, printable, setup_logging

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Tr0ub4dor-and-3"
HOSTILE = {
    "no @": "a" * 1_000_000,
    "colons": "a:" * 500_000,
    "colons then @": ":" * 1_000_000 + "@",
    "schemes": "x://" * 250_000 + "@",
    "keywords": "password " * 100_000,
    "slashes": "/" * 1_000_000,
    "many @": ("u:p" * 100 + "@") * 3_000,
}


def test_masking_a_megabyte_takes_milliseconds():
    for name, text in HOSTILE.items():
        started = time.perf_counter()
        mask_secrets(text)
        assert time.perf_counter() - started < 0.5, name


@hsettings(max_examples=200, deadline=None)
@given(
    head=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="@"), max_size=30),
    user=st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=10),
    password=st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters="@"), min_size=1, max_size=20),
)
def test_a_url_password_never_survives(head, user, password):
    text = f"{head} postgresql+psycopg://{user}:{password}@db:5432/x"
    masked = mask_secrets(text)
    assert f"{user}:{password}@" not in masked and f"{user}:***@db:5432/x" in masked


def test_known_forms_are_masked():
    assert mask_secrets("http://host:8080/path@x") == "http://host:***@x"
    assert mask_secrets("user@host and sqlite:///a.sqlite") == "user@host and sqlite:///a.sqlite"
    assert mask_secrets("mssql+pyodbc://sa:pa:ss/w@sql/db") == "mssql+pyodbc://sa:***@sql/db"


def test_printable_escapes_control_characters_and_clips():
    assert printable("C01\nERROR forged\x1b[31m") == "C01\\nERROR forged\\x1b[31m"
    assert printable("x" * 500, 10) == "xxxxxxxxxx... [490 more characters]"


def test_a_message_is_clipped_and_a_newline_cannot_forge_a_text_line(tmp_path):
    log_file = tmp_path / "text.log"
    setup_logging("INFO", "text", log_file)
    log = logging.getLogger("compressor_ad.test")
    log.warning("compressor %s skipped", "C01\n2026-01-01 00:00:00 ERROR   compressor_ad: forged")
    log.info("big %s", "y" * 1_000_000)
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "C01\\n2026-01-01 00:00:00 ERROR" in lines[0]
    assert MAX_MESSAGE_CHARS < len(lines[1]) < MAX_MESSAGE_CHARS + 200 and lines[1].endswith("more characters]")


def test_json_records_carry_batch_fields(tmp_path):
    log_file = tmp_path / "json.log"
    setup_logging("INFO", "json", log_file)
    logging.getLogger("compressor_ad.test").info(
        "done", extra={"compressor": "C01", "batch_id": "b1", "rows_read": 10, "windows_scored": 4, "duration_s": 0.25}
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    record = json.loads(log_file.read_text(encoding="utf-8"))
    assert {k: record[k] for k in ("compressor", "batch_id", "rows_read", "windows_scored", "duration_s")} == {
        "compressor": "C01", "batch_id": "b1", "rows_read": 10, "windows_scored": 4, "duration_s": 0.25,
    }


def run_cli(*args: str, cwd: Path = ROOT, **popen) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_AD_")}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, str(ROOT / "run_scheduler.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **popen)


@pytest.mark.slow
def test_a_failure_reason_reaches_the_log_file_once_on_the_terminal(tmp_path):
    log_file = tmp_path / "cli.log"
    done = run_cli("--log-format", "json", "--log-file", str(log_file), "--model-dir", str(tmp_path / "m"), "models", "promote", "../../ext")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: invalid model version name '../../ext': 1 to 64 letters, digits, '_' or '-' (e.g. 20260101T000000000000Z)"]
    records = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert [(r["level"], r["command"]) for r in records] == [("ERROR", "models promote")]
    assert records[0]["message"].startswith("models promote failed: invalid model version name '../../ext'")


def test_tensorflow_start_up_lines_stay_off_stderr(tmp_path, trained_fleet):
    """`evaluate` imports TensorFlow; stderr carries the pipeline's own lines only (no absl/oneDNN notes)."""
    settings = trained_fleet["settings"]
    done = run_cli("--db-url", settings.db_url, "--model-dir", str(settings.model_dir), "--log-level", "WARNING",
                   "evaluate", "--start", "2026-01-01T12:00", "--end", "2026-01-01T13:00", "--out", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    assert "absl::InitializeLog" not in done.stderr and "oneDNN" not in done.stderr and "cpu_feature_guard" not in done.stderr
