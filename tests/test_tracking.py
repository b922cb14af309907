"""MLflow tracking: a run logged to a local file store holds the params, losses, thresholds and artifacts;
`train` logs only when asked (and never imports mlflow otherwise)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from models.artifacts import versions_dir
from models.tracking import log_training

ROOT = Path(__file__).resolve().parents[1]


def artifact_files(client, run_id: str, path: str = "model") -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, path)}


def test_log_training_to_a_file_store(trained_fleet, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "ops-test")
    bundle, settings = trained_fleet["bundle"], trained_fleet["settings"]
    uri = (tmp_path / "mlruns").as_uri()

    run_id = log_training(bundle, settings, versions_dir(settings.model_dir) / bundle.version, evaluation={"event_recall": 0.75}, tracking_uri=uri)

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "ops-test"
    params = run.data.params
    assert params["model_version"] == bundle.version and params["detector"] == "lstm_ae"
    assert params["training.epochs"] == str(settings.training.epochs)
    assert params["compressor_ids"] == ",".join(bundle.compressors)
    assert params["training_end"] == trained_fleet["train_end"].isoformat()
    for key in ("loss", "val_loss"):
        logged = client.get_metric_history(run_id, key)
        assert [m.value for m in sorted(logged, key=lambda m: m.step)] == pytest.approx(bundle.detector.history[key])
    for cid, threshold in bundle.thresholds.items():
        assert run.data.metrics[f"threshold.{cid}"] == pytest.approx(threshold)
    assert run.data.metrics["eval.event_recall"] == 0.75
    assert run.data.tags["model_version"] == bundle.version
    assert {"metadata.json", "model.keras", "detector.json"} <= artifact_files(client, run_id)


SCRIPT = """
import json, sys
from scheduler.cli import main
args = ["--db-url", sys.argv[1], "--model-dir", sys.argv[2], "--log-level", "WARNING", "train", "--epochs", "1",
        "--start", "2026-01-01", "--end", "2026-01-01T06:00", "--no-promote"]
plain = main(args)
imported_after_plain = "mlflow" in sys.modules
tracked = main(args + ["--mlflow"])
print(json.dumps({"plain": plain, "tracked": tracked, "imported_after_plain": imported_after_plain}))
"""


def test_train_logs_to_mlflow_only_when_asked(trained_fleet, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "COMPRESSOR_AD_"))}
    env.update(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, trained_fleet["settings"].db_url, str(tmp_path / "models")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result == {"plain": 0, "tracked": 0, "imported_after_plain": False}
    plain_version, tracked_version = lines[0], lines[1]

    store = tmp_path / "var" / "mlruns"  # the default store, relative to the working directory
    client = mlflow.MlflowClient(store.as_uri())
    experiment = client.get_experiment_by_name("compressor-anomaly-detection")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.data.params["model_version"] for r in runs] == [tracked_version]
    assert plain_version != tracked_version
    assert "metadata.json" in artifact_files(client, runs[0].info.run_id)
