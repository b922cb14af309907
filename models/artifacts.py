"""Model versions on disk: one directory per version, JSON metadata with SHA-256 of every file.

    MODEL_DIR/
      versions/<version>/model.keras, detector.json, metadata.json
      current.json            -> {"version": "..."}   (written atomically by `models promote`)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.errors import ModelArtifactError, UnknownCompressorError
from core.settings import Settings
from models.alarms import AlarmRule

METADATA_FILE = "metadata.json"
CURRENT_FILE = "current.json"


def _detector_classes() -> dict[str, Any]:
    from models.iforest import IsolationForestDetector
    from models.lstm_ae import LSTMAutoencoderDetector

    return {LSTMAutoencoderDetector.name: LSTMAutoencoderDetector, IsolationForestDetector.name: IsolationForestDetector}


@dataclass
class ModelBundle:
    """A detector with its per-compressor thresholds, its alarm rule and the metadata that describes it.

    `calibration` holds, per compressor, how its threshold was obtained (models/calibration.py).
    """

    detector: Any
    thresholds: dict[str, float]
    threshold_rule: str
    alarm: AlarmRule
    training_range: tuple[str | None, str | None] = (None, None)
    version: str = ""
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def features(self) -> tuple[str, ...]:
        return self.detector.features

    @property
    def window(self) -> int:
        return self.detector.window

    @property
    def compressors(self) -> list[str]:
        return list(self.thresholds)

    def threshold_for(self, cid: str) -> float:
        if cid not in self.thresholds:
            raise UnknownCompressorError(
                f"compressor {cid!r} is not in model {self.version} (known: {', '.join(self.thresholds)}); "
                "add it with `train --add-compressor`"
            )
        return self.thresholds[cid]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_version() -> str:
    """A sortable version name: UTC time to the microsecond."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def versions_dir(model_dir: Path) -> Path:
    return Path(model_dir) / "versions"


def save_bundle(bundle: ModelBundle, model_dir: Path) -> Path:
    """Write a new version directory (atomically renamed into place) and return its path."""
    bundle.version = bundle.version or new_version()
    bundle.created_at = bundle.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    target = versions_dir(model_dir) / bundle.version
    if target.exists():
        raise ModelArtifactError(f"model version {bundle.version} already exists in {model_dir}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        files = bundle.detector.save(staging)
        metadata = {
            "version": bundle.version,
            "created_at": bundle.created_at,
            "detector": bundle.detector.name,
            "features": list(bundle.features),
            "window": bundle.window,
            "compressors": bundle.compressors,
            "thresholds": bundle.thresholds,
            "threshold_rule": bundle.threshold_rule,
            "alarm_rule": bundle.alarm.to_dict(),
            "calibration": bundle.calibration,
            "training_range": list(bundle.training_range),
            "extra": bundle.extra,
            "files": {name: _sha256(staging / name) for name in files},
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1), encoding="utf-8")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_metadata(model_dir: Path, version: str) -> dict[str, Any]:
    path = versions_dir(model_dir) / version / METADATA_FILE
    if not path.is_file():
        raise ModelArtifactError(f"model version {version!r} not found: {path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelArtifactError(f"{path} is not valid JSON: {exc}") from exc


def verify_files(model_dir: Path, metadata: dict[str, Any]) -> None:
    """Raise ModelArtifactError naming the first missing or modified file."""
    directory = versions_dir(model_dir) / metadata["version"]
    for name, expected in metadata.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise ModelArtifactError(f"model version {metadata['version']}: file {name} is missing")
        if _sha256(path) != expected:
            raise ModelArtifactError(
                f"model version {metadata['version']}: file {name} does not match its SHA-256 "
                "(modified or corrupt); retrain or restore it"
            )


def load_bundle(model_dir: Path, version: str | None = None, expected_features: tuple[str, ...] | None = None) -> ModelBundle:
    """Load a version (default: the promoted one), verifying hashes and the feature list."""
    version = version or current_version(model_dir)
    metadata = read_metadata(model_dir, version)
    verify_files(model_dir, metadata)
    if expected_features is not None and tuple(metadata["features"]) != tuple(expected_features):
        raise ModelArtifactError(
            f"model version {version} was trained on features {metadata['features']}, "
            f"but the configuration lists {list(expected_features)}"
        )
    classes = _detector_classes()
    if metadata.get("detector") not in classes:
        raise ModelArtifactError(f"model version {version}: unknown detector {metadata.get('detector')!r}")
    detector = classes[metadata["detector"]].load(versions_dir(model_dir) / version)
    return ModelBundle(
        detector=detector,
        thresholds={k: float(v) for k, v in metadata["thresholds"].items()},
        threshold_rule=metadata["threshold_rule"],
        alarm=_alarm_rule(metadata),
        training_range=tuple(metadata.get("training_range", (None, None))),
        version=version,
        created_at=metadata["created_at"],
        extra=metadata.get("extra", {}),
        calibration=metadata.get("calibration", {}),
    )


def _alarm_rule(metadata: dict[str, Any]) -> AlarmRule:
    """The saved alarm rule; a version saved before alarm rules existed had N in a row, no quiet period."""
    try:
        if "alarm_rule" in metadata:
            return AlarmRule.from_dict(metadata["alarm_rule"])
        return AlarmRule("consecutive", n=int(metadata["consecutive_trigger"]), quiet_windows=0)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelArtifactError(f"model version {metadata.get('version')}: unreadable alarm rule: {exc}") from exc


def list_versions(model_dir: Path) -> list[dict[str, Any]]:
    """Metadata of every version, oldest first (unreadable ones reported with an error)."""
    root = versions_dir(model_dir)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            found.append(read_metadata(model_dir, path.name))
        except ModelArtifactError as exc:
            found.append({"version": path.name, "error": str(exc)})
    return found


def promote(model_dir: Path, version: str) -> None:
    """Make `version` the one the scheduler uses (atomic write of current.json)."""
    verify_files(model_dir, read_metadata(model_dir, version))
    target = Path(model_dir) / CURRENT_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": version}), encoding="utf-8")
    os.replace(tmp, target)


def current_version(model_dir: Path) -> str:
    """The promoted version; raise ModelArtifactError when none is."""
    path = Path(model_dir) / CURRENT_FILE
    if not path.is_file():
        raise ModelArtifactError(f"no model promoted in {model_dir}: run `train` first (or `models promote VERSION`)")
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError) as exc:
        raise ModelArtifactError(f"{path} is unreadable: {exc}") from exc


def load_for_settings(settings: Settings, version: str | None = None) -> ModelBundle:
    """The bundle the pipeline should use for these settings."""
    return load_bundle(settings.model_dir, version, settings.data.features)
