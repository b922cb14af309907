"""Experiment tracking: one MLflow run per trained model version (`train --mlflow`).

MLflow is imported only here, and this module only when tracking is asked for. The run goes
to $MLFLOW_TRACKING_URI (default: a file store under var/mlruns) in the experiment
$MLFLOW_EXPERIMENT_NAME (default: compressor-anomaly-detection); a team would point the variable
at its MLflow server (http://...). Local file stores are allowed explicitly (MLflow otherwise
refuses them, and its SQLite store needs packages mlflow-skinny lacks). The run holds the settings as
parameters, the training and validation loss per epoch, every compressor's threshold,
evaluation metrics when the caller has them, and the saved version directory as artifacts.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

from core.logs import mask_secrets
from core.settings import Settings
from models.artifacts import ModelBundle

log = logging.getLogger(__name__)

DEFAULT_TRACKING_DIR = Path("var/mlruns")
DEFAULT_EXPERIMENT = "compressor-anomaly-detection"
ARTIFACT_PATH = "model"
MAX_PARAM_CHARS = 6000


def _metric_key(text: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and spaces; anything else becomes _."""
    return re.sub(r"[^\w\-./ ]", "_", text)


def training_params(bundle: ModelBundle, settings: Settings) -> dict[str, Any]:
    """Everything that shaped the model, flat, as MLflow parameters."""
    params: dict[str, Any] = {
        "model_version": bundle.version,
        "detector": bundle.detector.name,
        "window": bundle.window,
        "n_features": len(bundle.features),
        "features": ",".join(bundle.features),
        "compressors": len(bundle.compressors),
        "compressor_ids": ",".join(bundle.compressors)[:MAX_PARAM_CHARS],
        "threshold_rule": bundle.threshold_rule,
        "alarm_rule": bundle.alarm.describe(),
        "training_start": bundle.training_range[0],
        "training_end": bundle.training_range[1],
        "sampling_interval_s": settings.data.sampling_interval_s,
    }
    for section in ("training", "detection"):
        for name, value in dataclasses.asdict(getattr(settings, section)).items():
            params.setdefault(f"{section}.{name}", value)
    return params


def log_training(
    bundle: ModelBundle,
    settings: Settings,
    version_dir: Path,
    evaluation: Mapping[str, float] | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Log one trained version to MLflow; return the run id."""
    import mlflow

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_DIR.resolve().as_uri()
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    history = getattr(bundle.detector, "history", None) or {}
    with mlflow.start_run(run_name=bundle.version) as run:
        mlflow.set_tags({"model_version": bundle.version, "parent_version": bundle.extra.get("parent_version", "")})
        mlflow.log_params(training_params(bundle, settings))
        for name, values in history.items():
            for epoch, value in enumerate(values):
                mlflow.log_metric(_metric_key(name), float(value), step=epoch)
        mlflow.log_metrics({_metric_key(f"threshold.{cid}"): float(t) for cid, t in bundle.thresholds.items()})
        if evaluation:
            mlflow.log_metrics({_metric_key(f"eval.{k}"): float(v) for k, v in evaluation.items()})
        mlflow.log_artifacts(str(version_dir), artifact_path=ARTIFACT_PATH)
    log.info(
        "logged model %s to MLflow run %s (%d epochs, %d thresholds) at %s",
        bundle.version, run.info.run_id, max((len(v) for v in history.values()), default=0), len(bundle.thresholds), mask_secrets(uri),
    )
    return run.info.run_id
