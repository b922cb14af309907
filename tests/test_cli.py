"""Command line: help everywhere, one-line errors, models list/promote, status, URL sources, masking."""
import argparse
import contextlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.version import __version__
from scheduler.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
SECRET = "S3cretPw"



def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_scheduler.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command the parser knows, e.g. ("models", "promote")."""

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield prefix + (name,)
                    yield from walk(sub, prefix + (name,))

    return list(walk(build_parser(), ()))


@pytest.fixture
def fleet_url(trained_fleet, tmp_path):
    """A private copy of the session fleet's database (telemetry only, nothing scored yet)."""
    target = tmp_path / "fleet.sqlite"
    source = sa.make_url(trained_fleet["settings"].db_url).database
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return f"sqlite:///{target}"


@pytest.fixture
def fleet_args(trained_fleet, fleet_url):
    return ["--db-url", fleet_url, "--model-dir", str(trained_fleet["settings"].model_dir)]


# ----------------------------------------------------------------------- help
def test_parser_knows_the_documented_commands():
    names = {path[0] for path in command_paths()}
    assert {"simulate", "train", "run", "backfill", "status", "models", "demo"} <= names
    assert ("models", "list") in command_paths() and ("models", "promote") in command_paths()


@pytest.mark.parametrize("path", [()] + command_paths(), ids=lambda p: " ".join(p) or "top")
def test_every_command_has_help(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: run_scheduler.py {' '.join(path)}".rstrip())


@pytest.mark.slow
def test_help_through_the_entry_point():
    done = cli("--help")
    assert done.returncode == 0
    for name in ("simulate", "train", "run", "backfill", "status", "models"):
        assert name in done.stdout


@pytest.mark.slow
def test_version_through_the_entry_point():
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"run_scheduler.py {__version__}"


def test_the_version_is_written_in_core_version_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "core.version.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)

# ------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "argv, reason",
    [
        ([], "the following arguments are required: COMMAND"),
        (["backfill", "--end", "2026-01-02"], "the following arguments are required: --start"),
        (["train", "--start", "yesterday"], "not an ISO date/time: 'yesterday'"),
        (["run"], "one of the arguments --once --interval is required"),
        (["simulate", "--days", "many"], "invalid float value: 'many'"),
        (["models", "promote"], "the following arguments are required: version"),
    ],
)
def test_bad_arguments_exit_non_zero_with_the_reason(argv, reason, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert reason in err.strip().splitlines()[-1]


@pytest.mark.slow
def test_train_without_a_source_table(tmp_path, capsys):
    code = main(["--db-url", f"sqlite:///{tmp_path / 'empty.sqlite'}", "--model-dir", str(tmp_path / "m"), "train"])
    assert code == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "no such table: compressor_telemetry" in lines[0]
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_train_with_no_data(tmp_path, capsys):
    from db.engine import make_engine
    from db.schema import build_tables, create_all
    from core.settings import load_settings

    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    create_all(make_engine(url), build_tables(load_settings(None, env={}, db_url=url)))
    assert main(["--db-url", url, "--model-dir", str(tmp_path / "m"), "train"]) == 1
    assert error_lines(capsys.readouterr().err) == ["error: no compressor has enough normal windows to train on; widen the training range"]


def test_train_on_a_range_without_rows(fleet_args, tmp_path, capsys):
    args = fleet_args[:2] + ["--model-dir", str(tmp_path / "m")]
    assert main([*args, "train", "--start", "2030-01-01", "--end", "2030-01-02"]) == 1
    assert error_lines(capsys.readouterr().err) == ["error: no compressor has enough normal windows to train on; widen the training range"]


@pytest.mark.slow
def test_run_without_a_promoted_model(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'fleet.sqlite'}"
    assert main(["--db-url", url, "simulate", "--compressors", "1", "--days", "0.02"]) == 0
    capsys.readouterr()
    done = cli("--db-url", url, "--model-dir", str(tmp_path / "no_models"), "run", "--once")
    assert done.returncode == 1
    assert error_lines(done.stderr) == [f"error: no model promoted in {tmp_path / 'no_models'}: run `train` first (or `models promote VERSION`)"]
    assert done.stderr.strip().splitlines()[-1].startswith("error: no model promoted")
    quiet = cli("--log-level", "ERROR", "--db-url", url, "--model-dir", str(tmp_path / "no_models"), "run", "--once")
    assert quiet.returncode == 1
    assert len(quiet.stderr.strip().splitlines()) == 1
    assert quiet.stdout == ""


def test_run_without_a_source_table(tmp_path, capsys):
    assert main(["--db-url", f"sqlite:///{tmp_path / 'x.sqlite'}", "--model-dir", str(tmp_path), "run", "--once"]) == 1
    assert error_lines(capsys.readouterr().err) == ["error: source table 'compressor_telemetry' does not exist"]


def test_a_bug_shows_its_traceback_not_an_input_error(tmp_path, capsys, monkeypatch):
    import scheduler.status

    def broken(*args, **kwargs):
        raise KeyError("no_such_key")

    monkeypatch.setattr(scheduler.status, "fleet_status", broken)
    url = ["--db-url", f"sqlite:///{tmp_path / 'x.sqlite'}"]
    assert main([*url, "status"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == ["error: unexpected KeyError: 'no_such_key' (a bug, not bad input; run with --log-level DEBUG for the traceback)"]
    assert "Traceback" not in err

    log_file = tmp_path / "status.log"
    assert main([*url, "--log-file", str(log_file), "status"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [f"error: unexpected KeyError: 'no_such_key' (a bug, not bad input; traceback in {log_file})"]
    assert "Traceback" not in err
    logged = log_file.read_text()
    assert "Traceback (most recent call last)" in logged and 'raise KeyError("no_such_key")' in logged

    assert main([*url, "--log-level", "DEBUG", "status"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'raise KeyError("no_such_key")' in err
    assert error_lines(err) == ["error: unexpected KeyError: 'no_such_key' (a bug, not bad input; traceback above)"]


def test_bad_config_file(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[data]\nwindow = 1\n")
    assert main(["--config", str(config), "status"]) == 1
    assert error_lines(capsys.readouterr().err) == ["error: [data] window = 1 is out of range: must be in [2, 10000]"]


# --------------------------------------------------------------------- models
def test_models_list_and_promote(trained_fleet, tmp_path, capsys):
    version = trained_fleet["bundle"].version
    model_dir = tmp_path / "models"
    shutil.copytree(trained_fleet["settings"].model_dir, model_dir)
    (model_dir / "current.json").unlink()
    args = ["--model-dir", str(model_dir)]

    assert main([*args, "models", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 4 and listed[0].startswith(f"  {version}")  # the version, then one line per compressor
    assert "lstm_ae" in listed[0] and "compressors=3" in listed[0] and "alarm=k_of_n" in listed[0]
    assert [line.split(":")[0].strip() for line in listed[1:]] == ["C01", "C02", "C03"]
    assert all("windows 2026-01-01" in line and "target 2.000%" in line for line in listed[1:])

    assert main([*args, "models", "promote", version]) == 0
    assert capsys.readouterr().out.strip() == f"promoted {version}"
    assert json.loads((model_dir / "current.json").read_text()) == {"version": version}
    assert main([*args, "models", "list"]) == 0
    assert capsys.readouterr().out.startswith(f"* {version}")

    assert main([*args, "models", "promote", "20990101T000000000000Z"]) == 1
    assert error_lines(capsys.readouterr().err) == [
        f"error: model version '20990101T000000000000Z' not found: {model_dir / 'versions' / '20990101T000000000000Z' / 'metadata.json'} is missing"
    ]
    assert json.loads((model_dir / "current.json").read_text()) == {"version": version}


def test_models_list_without_versions(tmp_path, capsys):
    assert main(["--model-dir", str(tmp_path / "none"), "models", "list"]) == 0
    assert capsys.readouterr().out.strip() == f"no model versions in {tmp_path / 'none'}"


def test_model_dir_from_the_environment(trained_fleet, tmp_path, monkeypatch, capsys):
    shutil.copytree(trained_fleet["settings"].model_dir, tmp_path / "env_models")
    monkeypatch.setenv("COMPRESSOR_AD_MODEL_DIR", str(tmp_path / "env_models"))
    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out.startswith(f"* {trained_fleet['bundle'].version}")


# --------------------------------------------------------------------- status
def test_status_text_and_json(fleet_args, capsys):
    assert main([*fleet_args, "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["compressor", "checkpoint", "waiting"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["C01", "C02", "C03"]
    assert all(r[1] == "-" and r[2] == "5760" for r in rows)  # no checkpoint, two days of rows waiting

    assert main([*fleet_args, "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(d["compressor_id"], d["checkpoint"], d["rows_waiting"], d["last_batch"]) for d in data] == [
        (cid, None, 5760, None) for cid in ("C01", "C02", "C03")
    ]


def test_db_url_from_environment_and_option(fleet_url, tmp_path, monkeypatch, capsys):
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    assert main(["--db-url", other, "simulate", "--compressors", "2", "--days", "0.01"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("COMPRESSOR_AD_DB_URL", fleet_url)
    assert main(["status", "--json"]) == 0
    assert [d["compressor_id"] for d in json.loads(capsys.readouterr().out)] == ["C01", "C02", "C03"]
    assert main(["--db-url", other, "status", "--json"]) == 0  # the option beats the environment
    assert [d["compressor_id"] for d in json.loads(capsys.readouterr().out)] == ["C01", "C02"]


# -------------------------------------------------------------------- secrets
@pytest.mark.parametrize(
    "url, reason",
    [
        (f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:notaport/db", "error: invalid database URL 'postgresql+psycopg://alice:***@127.0.0.1:notaport/db'"),
        (f"postgresql+nosuchdriver://alice:{SECRET}@127.0.0.1/db", "error: cannot create a database engine for postgresql+nosuchdriver://alice:***@127.0.0.1/db"),
        (f"alice:{SECRET}@127.0.0.1/db", "error: invalid database URL 'alice:***@127.0.0.1/db'"),
        (f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:1/db", "error: database: "),
    ],
)
def test_passwords_are_masked_in_errors(url, reason, capsys):
    assert main(["--log-level", "DEBUG", "--db-url", url, "status"]) == 1  # DEBUG: tracebacks are logged too
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith(reason)
    assert SECRET not in captured.err + captured.out


@pytest.mark.slow
def test_passwords_are_masked_in_logs_of_a_failing_run(tmp_path):
    config = tmp_path / "settings.toml"
    config.write_text("[scheduler]\nretry_attempts = 2\nretry_base_delay_s = 0.01\n")
    log_file = tmp_path / "run.log"
    done = cli(
        "--config", str(config), "--log-level", "DEBUG", "--log-file", str(log_file),
        "--db-url", f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:1/db", "--model-dir", str(tmp_path), "run", "--once",
    )
    assert done.returncode == 1
    assert len(error_lines(done.stderr)) == 1
    assert SECRET not in done.stderr + done.stdout
    assert SECRET not in log_file.read_text()
