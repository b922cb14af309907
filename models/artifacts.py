"""Model versions on disk: one directory per version, JSON metadata with SHA-256 of every file.

    MODEL_DIR/
      versions/<version>/model.keras, weights.npz, detector.json, metadata.json, metadata.sha256 (LSTM autoencoder)
      current.json            -> {"version": "..."}   (written atomically by `models promote`)

Invariants of a version that loads or is promoted: its name matches VERSION_PATTERN; its directory
resolves to a direct child of MODEL_DIR/versions (no `..`, no link out) and is the directory that is
checked and loaded; metadata.sha256 holds the SHA-256 of metadata.json (thresholds, trigger and
features are covered); metadata.json names its own directory as `version` and lists every other
file of the directory with its SHA-256, and each file matches.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.errors import ModelArtifactError, UnknownCompressorError
from core.logs import printable
from core.settings import Settings
from models.alarms import AlarmRule
from models.detector import Detector
from models.registry import detector_kind

METADATA_FILE = "metadata.json"
METADATA_HASH_FILE = "metadata.sha256"
CURRENT_FILE = "current.json"
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class UnloadedDetector:
    """A detector as its metadata describes it, before it is loaded: enough to decide whether a run has work."""

    name: str
    features: tuple[str, ...]
    window: int


@dataclass
class ModelBundle:
    """A detector with its per-compressor thresholds, its alarm rule and the metadata that describes it.

    `calibration` holds, per compressor, how its threshold was obtained (models/calibration.py);
    `detector` is an UnloadedDetector in a bundle from load_metadata_bundle, which cannot score.
    """

    detector: Detector | UnloadedDetector
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

    @property
    def loaded(self) -> bool:
        """False for a bundle from load_metadata_bundle, whose detector cannot score yet."""
        return not isinstance(self.detector, UnloadedDetector)

    def threshold_for(self, cid: str) -> float:
        if cid not in self.thresholds:
            raise UnknownCompressorError(
                f"compressor {cid!r} is not in model {self.version} (known: {', '.join(self.thresholds)}); "
                "add it with `train --add-compressor`"
            )
        return self.thresholds[cid]


def check_version_name(version: object) -> str:
    """`version` if it is a valid version name (1 to 64 letters, digits, '_' or '-'), else ModelArtifactError."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise ModelArtifactError(
            f"invalid model version name {printable(repr(version), 80)}: 1 to 64 letters, digits, '_' or '-' (e.g. 20260101T000000000000Z)"
        )
    return version


def version_dir(model_dir: Path, version: str) -> Path:
    """The resolved directory of `version`; ModelArtifactError when it would lie outside MODEL_DIR/versions."""
    check_version_name(version)
    root = versions_dir(model_dir).resolve()
    resolved = (root / version).resolve()
    if resolved.parent != root:
        raise ModelArtifactError(f"model version {version}: its directory resolves to {resolved}, outside {root}; refused")
    return resolved


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
    bundle.version = check_version_name(bundle.version or new_version())
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
        encoded = json.dumps(metadata, indent=1).encode("utf-8")
        (staging / METADATA_FILE).write_bytes(encoded)
        (staging / METADATA_HASH_FILE).write_text(hashlib.sha256(encoded).hexdigest() + "\n", encoding="ascii")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_metadata(model_dir: Path, version: str) -> dict[str, Any]:
    """The metadata of `version`, checked against metadata.sha256, naming its own directory, listing its files."""
    directory = version_dir(model_dir, version)
    path = versions_dir(model_dir) / version / METADATA_FILE
    if not (directory / METADATA_FILE).is_file():
        raise ModelArtifactError(f"model version {version!r} not found: {path} is missing")
    try:
        encoded = (directory / METADATA_FILE).read_bytes()
        expected = (directory / METADATA_HASH_FILE).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ModelArtifactError(f"model version {version}: {METADATA_HASH_FILE} is missing, so {METADATA_FILE} cannot be checked; retrain or restore it") from None
    except (OSError, ValueError) as exc:
        raise ModelArtifactError(f"model version {version}: {METADATA_HASH_FILE} is unreadable: {exc}") from exc
    if hashlib.sha256(encoded).hexdigest() != expected:
        raise ModelArtifactError(f"model version {version}: {METADATA_FILE} does not match its SHA-256 in {METADATA_HASH_FILE} (edited or corrupt); retrain or restore it")
    try:
        metadata = json.loads(encoded.decode("utf-8"))
    except ValueError as exc:
        raise ModelArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict) or metadata.get("version") != version:
        raise ModelArtifactError(f"model version {version}: {METADATA_FILE} names version {printable(repr(metadata.get('version') if isinstance(metadata, dict) else None), 80)}, not its own directory; refused")
    files = metadata.get("files")
    if not isinstance(files, dict) or not files or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ModelArtifactError(f"model version {version}: {METADATA_FILE} lists no file hashes; refused")
    return metadata


def verify_files(model_dir: Path, metadata: dict[str, Any]) -> None:
    """Raise ModelArtifactError naming the first missing, modified or unlisted file of the version's directory."""
    version = metadata["version"]
    directory = version_dir(model_dir, version)
    listed = metadata["files"]
    for name, expected in listed.items():
        path = directory / name
        if path.parent != directory or not path.is_file():
            raise ModelArtifactError(f"model version {version}: file {printable(name, 80)} is missing")
        if _sha256(path) != expected:
            raise ModelArtifactError(
                f"model version {version}: file {name} does not match its SHA-256 "
                "(modified or corrupt); retrain or restore it"
            )
    unlisted = sorted(p.name for p in directory.iterdir() if p.name not in listed and p.name not in (METADATA_FILE, METADATA_HASH_FILE))
    if unlisted:
        raise ModelArtifactError(f"model version {version}: {printable(unlisted[0], 80)} is not listed in {METADATA_FILE}; remove it or retrain")


def _checked_metadata(model_dir: Path, version: str | None, expected_features: tuple[str, ...] | None) -> dict[str, Any]:
    """The metadata of a version (default: the promoted one), its feature list and detector checked."""
    version = current_version(model_dir) if version is None else version
    metadata = read_metadata(model_dir, version)
    if expected_features is not None and tuple(metadata["features"]) != tuple(expected_features):
        raise ModelArtifactError(
            f"model version {version} was trained on features {metadata['features']}, "
            f"but the configuration lists {list(expected_features)}"
        )
    try:
        detector_kind(metadata.get("detector"))
    except ValueError:
        raise ModelArtifactError(f"model version {version}: unknown detector {metadata.get('detector')!r}") from None
    return metadata


def load_bundle(model_dir: Path, version: str | None = None, expected_features: tuple[str, ...] | None = None) -> ModelBundle:
    """Load a version (default: the promoted one), verifying hashes and the feature list."""
    metadata = _checked_metadata(model_dir, version, expected_features)
    verify_files(model_dir, metadata)
    version = metadata["version"]
    kind = detector_kind(metadata["detector"])
    if kind.uses_tensorflow:
        from models.compile_cache import use_cache

        use_cache(model_dir, version)  # before TensorFlow starts (only if a backfill needs the XLA graph), which reads the cache's place
    detector = kind.detector_class().load(version_dir(model_dir, version))
    return _bundle(metadata, detector)


def load_metadata_bundle(model_dir: Path, version: str | None = None, expected_features: tuple[str, ...] | None = None) -> ModelBundle:
    """A version's thresholds, alarm rule and training range without its detector (no TensorFlow, no weights read)."""
    metadata = _checked_metadata(model_dir, version, expected_features)
    return _bundle(metadata, UnloadedDetector(metadata["detector"], tuple(metadata["features"]), int(metadata["window"])))


def _bundle(metadata: dict[str, Any], detector: Detector | UnloadedDetector) -> ModelBundle:
    version = metadata["version"]
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
            metadata = read_metadata(model_dir, path.name)
            verify_files(model_dir, metadata)
            found.append(metadata)
        except ModelArtifactError as exc:
            found.append({"version": printable(path.name, 80), "error": str(exc)})
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
        version = json.loads(path.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelArtifactError(f"{path} is unreadable: {exc}") from exc
    return check_version_name(version)


def load_for_settings(settings: Settings, version: str | None = None) -> ModelBundle:
    """The bundle the pipeline should use for these settings."""
    return load_bundle(settings.model_dir, version, settings.data.features)


def metadata_for_settings(settings: Settings, version: str | None = None) -> ModelBundle:
    """load_for_settings without the detector (load_metadata_bundle)."""
    return load_metadata_bundle(settings.model_dir, version, settings.data.features)
