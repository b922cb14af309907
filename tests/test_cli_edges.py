"""The command line at its edges: `status` retries an unreachable database and survives a closed
pipe, import-csv refuses unprintable ids and quotes a huge bad cell clipped, --help states the paths."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.importer import MAX_CELL_CHARS
from scheduler.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT, **popen):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPRESSOR_AD_")}
    return subprocess.Popen([sys.executable, str(ROOT / "run_scheduler.py"), *args], cwd=cwd, env=env, text=True, **popen)


@pytest.mark.slow
def test_status_retries_an_unreachable_database(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[scheduler]\nretry_attempts = 3\nretry_base_delay_s = 0.05\n")
    url = "postgresql+psycopg://postgres:secret-pw@127.0.0.1:1/test?connect_timeout=2"
    process = cli("--config", str(config), "--db-url", url, "status", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert err.count("reading the status: transient database error (attempt") == 2
    assert err.strip().splitlines()[-1].startswith("error: database:") and "secret-pw" not in err


def test_status_into_a_closed_pipe_ends_without_a_traceback(trained_fleet):
    """`status --json | head -c1`: the reader is gone before the output is written."""
    read, write = os.pipe()
    os.close(read)
    process = cli("--db-url", trained_fleet["settings"].db_url, "status", "--json", stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert process.returncode == 0


@pytest.mark.slow
def test_status_from_another_directory_uses_the_project_database(tmp_path):
    process = cli("status", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.communicate(timeout=120)
    assert not (tmp_path / "var").exists(), "a default path was taken relative to the working directory"


def test_help_states_how_relative_paths_are_resolved():
    text = build_parser().format_help()
    assert "under the project root" in text and "relative to that file's directory" in text.replace("\n", " ")


def write_csv(path: Path, cid: str, value: str = "1.0") -> Path:
    path.write_text(f"timestamp,unit,flow\n2026-01-01T00:00:00,{cid},{value}\n2026-01-01T00:00:30,C01,1.0\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "cid, problem",
    [
        ('"C01\nERROR forged"', "must contain printable characters only"),
        ("C\x1b[31m01", "must contain printable characters only"),
        ("C01\u2028x", "must contain printable characters only"),
        ("X" * 65, "must be 1 to 64 characters"),
    ],
)
def test_import_refuses_ids_that_could_forge_lines(tmp_path, capsys, cid, problem):
    path = write_csv(tmp_path / "d.csv", cid)
    code = main(["--db-url", f"sqlite:///{tmp_path / 'i.sqlite'}", "import-csv", str(path), "--timestamp-col", "timestamp", "--compressor-col", "unit", "--features", "flow"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and problem in err[0] and "line 2" in err[0]
    assert not (tmp_path / "i.sqlite").exists() or "ERROR forged" not in (tmp_path / "i.sqlite").read_bytes().decode("latin-1")


def test_import_refuses_a_bad_compressor_id_option(tmp_path, capsys):
    path = write_csv(tmp_path / "d.csv", "C01")
    code = main(["--db-url", f"sqlite:///{tmp_path / 'i.sqlite'}", "import-csv", str(path), "--timestamp-col", "timestamp", "--compressor-id", "C\n01", "--features", "flow"])
    assert code == 1 and "--compressor-id 'C\\n01' must contain printable characters only" in capsys.readouterr().err


def test_a_huge_bad_cell_is_refused_fast_and_quoted_clipped(tmp_path, capsys):
    path = write_csv(tmp_path / "d.csv", "C01", "x:" * 2_500_000 + "@")  # a 5 MB cell that looked like user:password@
    started = time.perf_counter()
    code = main(["--db-url", f"sqlite:///{tmp_path / 'i.sqlite'}", "import-csv", str(path), "--timestamp-col", "timestamp", "--compressor-col", "unit", "--features", "flow"])
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and elapsed < 20
    assert "column 'flow', line 2:" in err[0] and "more characters]" in err[0] and len(err[0]) < 400 + MAX_CELL_CHARS
