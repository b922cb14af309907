"""Table and column names from configuration: hostile ones are refused before any SQL, awkward ones quoted."""
from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from core.settings import Settings, SourceSettings, DataSettings
from db.identifiers import UnsafeIdentifierError, check_identifier
from db.schema import build_tables
from db_servers import KINDS, database
from scheduler.cli import main

HOSTILE = [
    "compressor_telemetry; DROP TABLE lstm_scheduler_checkpoint",
    "telemetry'; DELETE FROM lstm_predictions_detailed; --",
    'tele"metry',
    "telemetry -- comment",
    "telemetry/*x*/",
    "telemetry\nDROP TABLE x",
    "telemetry\n",
    "`telemetry`",
    "[telemetry]",
    "",
    " padded",
    "ünïcode",
    "1st_table",
    "a" * 64,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused(name):
    with pytest.raises(UnsafeIdentifierError, match="source table .* is not allowed"):
        check_identifier(name, "source table")


@pytest.mark.parametrize("name", ["compressor_telemetry", "Telemetry Data", "_t", "a" * 63, "order"])
def test_plain_names_are_accepted(name):
    assert check_identifier(name, "source table") == name


@pytest.mark.parametrize(
    "settings, what",
    [
        (Settings(source=SourceSettings(table="t; DROP TABLE x")), "source table"),
        (Settings(source=SourceSettings(timestamp_column="ts' OR '1'='1")), "timestamp column"),
        (Settings(source=SourceSettings(compressor_column='id"--')), "compressor column"),
        (Settings(source=SourceSettings(label_column="label;")), "label column"),
        (Settings(data=DataSettings(features=("flow", "x); DROP TABLE y; --"))), "feature column"),
    ],
)
def test_table_definitions_name_the_bad_setting(settings, what):
    with pytest.raises(UnsafeIdentifierError, match=what):
        build_tables(settings)


def _snapshot(path) -> str:
    """Digest of the whole database content (schema and rows)."""
    with sqlite3.connect(path) as conn:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()


@pytest.mark.parametrize(
    "config",
    [
        '[source]\ntable = "compressor_telemetry; DROP TABLE lstm_scheduler_checkpoint; --"\n',
        "[source]\ntimestamp_column = \"timestamp' OR 1=1 --\"\n",
        '[source]\ncompressor_column = "compressor_id\\"; DELETE FROM compressor_telemetry; --"\n',
    ],
)
def test_command_line_refuses_hostile_names_and_leaves_the_database_alone(config, tmp_path, capsys):
    db = tmp_path / "plant.sqlite"
    url = f"sqlite:///{db}"
    assert main(["--db-url", url, "--model-dir", str(tmp_path / "models"), "simulate", "--compressors", "1", "--days", "0.05"]) == 0
    before = _snapshot(db)
    hostile = tmp_path / "hostile.toml"
    hostile.write_text(config, encoding="utf-8")
    commands = [
        ["simulate", "--compressors", "1", "--days", "0.05"],
        ["train"],
        ["run", "--once"],
        ["backfill", "--start", "2026-01-01", "--end", "2026-01-02"],
        ["status"],
    ]
    capsys.readouterr()
    for command in commands:
        assert main(["--config", str(hostile), "--db-url", url, "--model-dir", str(tmp_path / "models"), *command]) == 1, command
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "is not allowed: use letters, digits, underscores" in errors[0], (command, err)
    assert _snapshot(db) == before


@pytest.mark.parametrize("kind", KINDS)
def test_awkward_but_valid_names_are_quoted(kind, tmp_path, capsys):
    """A table name with a space and reserved words as column names work on every database."""
    config = tmp_path / "awkward.toml"
    config.write_text('[source]\ntable = "Telemetry Data"\ntimestamp_column = "order"\ncompressor_column = "group"\nlabel_column = "select"\n')
    with database(kind, tmp_path) as url:
        base = ["--config", str(config), "--db-url", url, "--model-dir", str(tmp_path / "models")]
        assert main([*base, "simulate", "--compressors", "2", "--days", "0.05"]) == 0
        capsys.readouterr()
        assert main([*base, "status", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
    assert [(r["compressor_id"], r["rows_waiting"]) for r in rows] == [("C01", 144), ("C02", 144)]
