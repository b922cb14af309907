"""The cron run: nothing to score starts no TensorFlow; the model is loaded only for the compressors that need it
and an hour is scored in NumPy (no TensorFlow, Keras or scikit-learn), writing what a run with the model loaded
writes; TensorFlow starts without Keras for a backfill's XLA graph, whose compilation cache is warmed by
`models promote` and used by the next process, under a key that follows the TensorFlow version, the CPU and
the XLA flags, and is the same in every process whatever it inherited."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta

import pytest

from models import compile_cache
from models.inference import NUMPY_UP_TO
from scheduler.runner import Runner
from scheduler_harness import INTERVAL, ROOT, TRAIN_END, append, assert_same_tables, prepared, run_live, scheduler_env, snapshot, trained_small_fleet, write_config


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return trained_small_fleet(tmp_path_factory.getbasetemp() / "small_fleet")


def _cli(args: list[str], env: dict[str, str] | None = None) -> dict:
    """main(args) in a new process: its exit code, whether TensorFlow, Keras and scikit-learn were imported, its output."""
    probe = (
        "import json, sys; from scheduler.cli import main; code = main(sys.argv[1:]); "
        "print(json.dumps({'code': code, **{name: name in sys.modules for name in ('tensorflow', 'keras', 'sklearn')}}))"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, env=scheduler_env(env), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "log": done.stderr}


def test_a_run_with_nothing_to_score_starts_no_tensorflow_and_says_so(fleet, tmp_path):
    config = write_config(tmp_path / "run.toml")
    settings = fleet.settings(f"sqlite:///{tmp_path / 'cron.sqlite'}", config)
    engine, tables = prepared(settings.db_url, settings)
    append(engine, tables, fleet.live(1.0))
    run_live(settings, engine, fleet.bundle)
    common = ["--config", str(config), "--db-url", settings.db_url, "--model-dir", str(fleet.model_dir)]
    idle = _cli([*common, "run", "--once"])
    assert idle["code"] == 0 and not idle["tensorflow"]
    assert "nothing to score, model not loaded" in idle["log"]
    append(engine, tables, fleet.live(1.5).loc[lambda rows: rows["timestamp"] > TRAIN_END + timedelta(hours=1)])
    busy = _cli([*common, "run", "--once"])
    assert busy["code"] == 0 and not busy["tensorflow"], "an hour is scored in NumPy"
    assert not busy["keras"] and not busy["sklearn"], "scoring reads the weights file: no Keras model, no scikit-learn"
    assert "3 of 3 compressors have windows to score" in busy["log"]
    engine.dispose()


def test_a_cron_run_scores_an_hour_without_tensorflow_and_writes_what_a_loaded_run_writes(fleet, tmp_path):
    """`run --once` in a new process (NumPy inference) and a run in this process with the model loaded, on the same rows."""
    config = write_config(tmp_path / "run.toml")
    rows = fleet.live(1.0)
    tables_of = {}
    for name in ("cron", "loaded"):
        settings = fleet.settings(f"sqlite:///{tmp_path / name}.sqlite", config)
        engine, tables = prepared(settings.db_url, settings)
        append(engine, tables, rows)
        if name == "cron":
            run = _cli(["--config", str(config), "--db-url", settings.db_url, "--model-dir", str(fleet.model_dir), "run", "--once"])
            assert run["code"] == 0 and not run["tensorflow"] and not run["keras"]
            assert "3 of 3 compressors have windows to score" in run["log"]
        else:
            run_live(settings, engine, fleet.bundle)
        tables_of[name] = snapshot(engine, tables)
        engine.dispose()
    assert len(tables_of["loaded"]["lstm_predictions_detailed"]) > 0
    assert_same_tables(tables_of["cron"], tables_of["loaded"])


def test_loading_the_model_only_when_needed_writes_what_a_loaded_run_writes(fleet, tmp_path):
    """New rows, then late rows inside the allowance (a hole filled) with no new rows: both runners store the same."""
    config = write_config(tmp_path / "run.toml")
    rows = fleet.live(2.0)
    hole = (rows["timestamp"] > TRAIN_END + timedelta(hours=1.6)) & (rows["timestamp"] <= TRAIN_END + timedelta(hours=1.6) + 20 * INTERVAL)
    tables_of = {}
    for name, bundle in (("loaded", fleet.bundle), ("deferred", None)):
        settings = fleet.settings(f"sqlite:///{tmp_path / name}.sqlite", config)
        engine, tables = prepared(settings.db_url, settings)
        runner = Runner(settings, engine, bundle)
        append(engine, tables, rows[~hole])
        first = runner.run_once()
        append(engine, tables, rows[hole])
        second = Runner(settings, engine, bundle).run_once()
        assert first.ok and second.ok
        assert sum(o.windows_scored for o in second.outcomes) > 0, "the filled hole gives windows to score"
        tables_of[name] = snapshot(engine, tables)
        engine.dispose()
    assert_same_tables(tables_of["deferred"], tables_of["loaded"])


def test_a_daemon_scores_every_call_compiled_and_stores_what_a_cron_run_stores(fleet, tmp_path):
    """run_forever marks its runner long-lived: the model it loads scores even an hour through the XLA graph
    (TensorFlow started once, ~7x faster per window than NumPy); the stored rows agree to float32 rounding."""
    config = write_config(tmp_path / "run.toml")
    rows = fleet.live(1.0)
    tables_of, paths = {}, {}
    for name, long_lived in (("cron", False), ("daemon", True)):
        settings = fleet.settings(f"sqlite:///{tmp_path / name}.sqlite", config)
        engine, tables = prepared(settings.db_url, settings)
        runner = Runner(settings, engine)
        runner.long_lived = long_lived
        append(engine, tables, rows)
        assert runner.run_once().ok
        reconstructor = runner.bundle.detector.reconstructor
        paths[name] = (reconstructor.numpy_up_to, reconstructor._xla is not None)
        tables_of[name] = snapshot(engine, tables)
        engine.dispose()
    assert paths == {"cron": (NUMPY_UP_TO, False), "daemon": (0, True)}
    assert_same_tables(tables_of["daemon"], tables_of["cron"])


def test_promote_warms_the_compilation_cache_and_the_next_backfill_compiles_nothing(fleet, tmp_path):
    """A call of more than NUMPY_UP_TO windows (a backfill) starts TensorFlow and loads the XLA graph that `models promote` compiled."""
    model_dir = tmp_path / "models"
    shutil.copytree(fleet.model_dir, model_dir, ignore=shutil.ignore_patterns(compile_cache.CACHE_DIR_NAME))
    config = write_config(tmp_path / "run.toml")
    settings = fleet.settings(f"sqlite:///{tmp_path / 'cache.sqlite'}", config)
    common = ["--config", str(config), "--db-url", settings.db_url, "--model-dir", str(model_dir)]
    on = {"COMPRESSOR_AD_COMPILE_CACHE": "1"}
    assert _cli([*common, "models", "promote", fleet.bundle.version], on)["code"] == 0
    (directory,) = (model_dir / compile_cache.CACHE_DIR_NAME).iterdir()
    assert directory.name.startswith(f"{fleet.bundle.version}-")
    warmed = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    assert warmed, "the XLA graph is in the cache"
    backfill = (
        "import sys; import numpy as np; from core.threads import use_single_threaded_kernels; use_single_threaded_kernels(); "
        "from models.artifacts import load_bundle; from models.inference import NUMPY_UP_TO; "
        "bundle = load_bundle(sys.argv[1]); assert 'tensorflow' not in sys.modules; "
        "bundle.detector.feature_errors(np.zeros((NUMPY_UP_TO + 1, bundle.window, len(bundle.features)), np.float32), bundle.compressors[0]); "
        "assert 'tensorflow' in sys.modules and 'keras' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", backfill, str(model_dir)], cwd=ROOT, env=scheduler_env(on), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == warmed, "the backfill loaded the executable and wrote none"


def test_the_cache_key_follows_tensorflow_cpu_and_xla_flags(monkeypatch):
    base = compile_cache.machine_key()
    assert base == compile_cache.machine_key()
    changes = [
        lambda: monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=128"),
        lambda: monkeypatch.setattr(compile_cache, "_cpu_identity", lambda: "model name : another CPU"),
        lambda: monkeypatch.setattr(compile_cache.importlib.metadata, "version", lambda name: "0.0.1"),
    ]
    for change in changes:
        change()
        assert compile_cache.machine_key() != base
        monkeypatch.undo()
        assert compile_cache.machine_key() == base


def test_the_cache_key_is_the_same_in_a_process_that_inherited_the_flags(monkeypatch, tmp_path):
    """`train` warms the cache in a child that inherits the XLA flags TensorFlow started with; `run` starts without them."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    fresh = compile_cache.cache_dir(tmp_path, "v1")
    inherited = os.environ["XLA_FLAGS"]
    assert inherited, "the flags TensorFlow starts with are set before the key is taken"
    monkeypatch.setenv("XLA_FLAGS", inherited)
    assert compile_cache.cache_dir(tmp_path, "v1") == fresh


def test_tensorflow_starts_without_keras_and_keras_imports_afterwards():
    """import_tensorflow refuses Keras only while TensorFlow starts: training imports it later as usual."""
    probe = (
        "import json, sys; from core.tf_startup import import_tensorflow; import_tensorflow(); "
        "before = {name: name in sys.modules for name in ('keras', 'sklearn', 'matplotlib')}; "
        "from models.autoencoder import build_autoencoder; model = build_autoencoder(2, 4, 3); "
        "print(json.dumps({'before': before, 'heads': model.get_layer('router').n_heads}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=scheduler_env(None), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"before": {"keras": False, "sklearn": False, "matplotlib": False}, "heads": 2}
