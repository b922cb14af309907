"""Typed settings: defaults, overridden by a TOML file, overridden by environment variables.

Environment variables:
    COMPRESSOR_AD_DB_URL            database URL (SQLAlchemy form)
    COMPRESSOR_AD_DB_PASSWORD       password injected into the URL (keeps it out of files)
    COMPRESSOR_AD_DB_PASSWORD_FILE  file holding that password (e.g. readable by the service user only)
    COMPRESSOR_AD_MODEL_DIR         model directory (versions live under it)
    COMPRESSOR_AD_CONFIG            TOML file to read when --config is not given

Relative paths: the defaults (database file, model directory) are under PROJECT_ROOT, paths in a
TOML file are relative to that file's directory, and paths from the environment or the command
line are taken as given (relative to the working directory). Numeric settings lie in RANGES.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

DRY_GAS_SEAL_SIGNALS = (
    "filter_dp",
    "seal_gas_flow",
    "seal_gas_diff_pressure",
    "seal_gas_temp",
    "primary_vent_flow",
    "primary_vent_pressure",
    "secondary_seal_gas_flow",
    "separation_seal_gas_flow",
    "separation_seal_gas_pressure",
    "seal_gas_to_vent_diff_pressure",
)
PROCESS_SIGNALS = (
    "flow",
    "suction_pressure",
    "discharge_pressure",
    "vibration",
    "motor_current",
    "temperature",
)
DEFAULT_FEATURES = DRY_GAS_SEAL_SIGNALS + PROCESS_SIGNALS
DEFAULT_DB_URL = "sqlite:///var/compressor_ad.sqlite"
DEFAULT_MODEL_DIR = Path("var/models")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
THRESHOLD_RULES = ("mean_std", "alarm_budget")
MISSING_VALUE_RULES = ("skip", "impute")
SCORE_METHODS = ("mahalanobis", "mse")


class SettingsError(ValueError):
    """A setting is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class SourceSettings:
    """Where the telemetry lives and how its columns are named."""

    table: str = "compressor_telemetry"
    timestamp_column: str = "timestamp"
    compressor_column: str = "compressor_id"
    label_column: str | None = "label"


@dataclass(frozen=True)
class DataSettings:
    """How raw rows become windows."""

    features: tuple[str, ...] = DEFAULT_FEATURES
    sampling_interval_s: float = 30.0
    window: int = 30
    max_gap_factor: float = 1.5
    missing_value_rule: str = "skip"
    lateness_allowance_s: float = 3600.0


@dataclass(frozen=True)
class DetectionSettings:
    """How scores become anomalies and alerts."""

    detector: str = "lstm_ae"
    score: str = "mahalanobis"
    threshold_rule: str = "mean_std"
    threshold_k: float = 2.0
    alarm_budget_per_hour: float = 0.1
    consecutive_trigger: int = 60


@dataclass(frozen=True)
class TrainingSettings:
    """Model training hyper-parameters."""

    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    validation_fraction: float = 0.15
    patience: int = 4
    window_stride: int = 2
    seed: int = 42
    max_windows_per_compressor: int = 2_000_000


@dataclass(frozen=True)
class SchedulerSettings:
    """Batch scheduling behaviour."""

    min_records: int = 1
    lease_seconds: float = 600.0
    retry_attempts: int = 5
    retry_base_delay_s: float = 0.5
    read_chunk_rows: int = 50_000
    parallel_compressors: int = 0  # compressors scored at once; 0 = 1 on SQLite, 2 on a database server


@dataclass(frozen=True)
class Settings:
    """All settings of the pipeline."""

    db_url: str = DEFAULT_DB_URL
    model_dir: Path = DEFAULT_MODEL_DIR
    source: SourceSettings = field(default_factory=SourceSettings)
    data: DataSettings = field(default_factory=DataSettings)
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with top-level fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def max_gap_s(self) -> float:
        """Largest spacing between consecutive rows that still belongs to one window."""
        return self.data.sampling_interval_s * self.data.max_gap_factor


_SECTIONS = {
    "source": SourceSettings,
    "data": DataSettings,
    "detection": DetectionSettings,
    "training": TrainingSettings,
    "scheduler": SchedulerSettings,
}


def _build_section(cls: type, values: Mapping[str, Any], section: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise SettingsError(f"unknown setting(s) in [{section}]: {', '.join(sorted(unknown))}")
    converted = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise SettingsError(f"[{section}] {name} must be a list of strings")
            value = tuple(value)
        elif isinstance(default, bool) or default is None:
            pass
        elif isinstance(default, (int, float)) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SettingsError(f"[{section}] {name} must be a number, got {value!r}")
        elif isinstance(default, int) and isinstance(value, float):
            raise SettingsError(f"[{section}] {name} must be an integer, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise SettingsError(f"[{section}] {name} must be a string, got {value!r}")
        converted[name] = value
    return cls(**converted)


# (section, setting): (lowest, highest, lowest allowed itself); the highest is always allowed.
RANGES: dict[tuple[str, str], tuple[float, float, bool]] = {
    ("data", "sampling_interval_s"): (0, 86_400, False),
    ("data", "window"): (2, 10_000, True),
    ("data", "max_gap_factor"): (1, 1_000, True),
    ("data", "lateness_allowance_s"): (0, 366 * 86_400, True),
    ("detection", "threshold_k"): (0, 100, False),
    ("detection", "alarm_budget_per_hour"): (0, 3_600, False),
    ("detection", "consecutive_trigger"): (1, 100_000, True),
    ("training", "epochs"): (1, 100_000, True),
    ("training", "batch_size"): (1, 1_000_000, True),
    ("training", "learning_rate"): (0, 1, False),
    ("training", "patience"): (0, 100_000, True),
    ("training", "window_stride"): (1, 100_000, True),
    ("training", "seed"): (0, 2**32 - 1, True),
    ("training", "max_windows_per_compressor"): (1, 10**9, True),
    ("scheduler", "min_records"): (0, 10**9, True),
    ("scheduler", "lease_seconds"): (1, 7 * 86_400, True),
    ("scheduler", "retry_attempts"): (1, 100, True),
    ("scheduler", "retry_base_delay_s"): (0, 600, True),
    ("scheduler", "read_chunk_rows"): (1, 10**8, True),
    ("scheduler", "parallel_compressors"): (0, 256, True),
}


def _check_ranges(settings: Settings) -> None:
    for (section, name), (low, high, low_allowed) in RANGES.items():
        value = getattr(getattr(settings, section), name)
        if not (low <= value if low_allowed else low < value) or not value <= high:
            bound = "[" if low_allowed else "("
            raise SettingsError(f"[{section}] {name} = {value!r} is out of range: must be in {bound}{low}, {high}]")


def validate(settings: Settings) -> Settings:
    """Check ranges and choices; return the settings unchanged or raise SettingsError."""
    _check_ranges(settings)
    data, det = settings.data, settings.detection
    if not data.features:
        raise SettingsError("[data] features must not be empty")
    if len(set(data.features)) != len(data.features):
        raise SettingsError("[data] features contains duplicates")
    if data.missing_value_rule not in MISSING_VALUE_RULES:
        raise SettingsError(f"[data] missing_value_rule must be one of {MISSING_VALUE_RULES}")
    if det.threshold_rule not in THRESHOLD_RULES:
        raise SettingsError(f"[detection] threshold_rule must be one of {THRESHOLD_RULES}")
    if det.score not in SCORE_METHODS:
        raise SettingsError(f"[detection] score must be one of {SCORE_METHODS}")
    if not 0 < settings.training.validation_fraction < 0.5:
        raise SettingsError("[training] validation_fraction must be in (0, 0.5)")
    return settings


_SQLITE_PREFIX = "sqlite:///"


def _under(base: Path, url: str) -> str:
    """A SQLite URL's relative file path resolved under `base`; other URLs unchanged."""
    if not url.startswith(_SQLITE_PREFIX):
        return url
    rest = url[len(_SQLITE_PREFIX):]
    if not rest or rest.startswith(("/", ":memory:", "?")) or re.match(r"[A-Za-z]:[\\/]", rest):
        return url
    return _SQLITE_PREFIX + (base / rest).as_posix()


def load_settings(
    config_file: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Defaults < TOML file < environment < explicit overrides (e.g. from the command line)."""
    env = os.environ if env is None else env
    config_file = config_file or env.get("COMPRESSOR_AD_CONFIG")
    raw: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"config file not found: {path}")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    base = Path(config_file).resolve().parent if config_file else PROJECT_ROOT
    top: dict[str, Any] = {"db_url": _under(PROJECT_ROOT, DEFAULT_DB_URL), "model_dir": PROJECT_ROOT / DEFAULT_MODEL_DIR}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise SettingsError(f"[{key}] must be a table")
            top[key] = _build_section(_SECTIONS[key], value, key)
        elif key == "database":
            if not isinstance(value, dict) or not isinstance(value.get("url", ""), str) or set(value) - {"url"}:
                raise SettingsError('[database] must be a table with one string key: url = "..."')
            top["db_url"] = _under(base, value.get("url", DEFAULT_DB_URL))
        elif key == "model_dir":
            if not isinstance(value, str):
                raise SettingsError(f"model_dir must be a string, got {value!r}")
            top["model_dir"] = base / value
        else:
            raise SettingsError(f"unknown section or key in config: {key}")
    if env.get("COMPRESSOR_AD_DB_URL"):
        top["db_url"] = env["COMPRESSOR_AD_DB_URL"]
    if env.get("COMPRESSOR_AD_MODEL_DIR"):
        top["model_dir"] = Path(env["COMPRESSOR_AD_MODEL_DIR"])
    for key, value in overrides.items():
        if value is not None:
            top[key] = Path(value) if key == "model_dir" else value
    return validate(Settings(**top))


def with_section(settings: Settings, section: str, **changes: Any) -> Settings:
    """A copy with fields of one section changed (used by the command line)."""
    current = getattr(settings, section)
    return validate(dataclasses.replace(settings, **{section: dataclasses.replace(current, **changes)}))
