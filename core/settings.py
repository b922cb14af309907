"""Typed settings: defaults, overridden by a TOML file, overridden by environment variables.

Environment variables:
    COMPRESSOR_AD_DB_URL            database URL (SQLAlchemy form)
    COMPRESSOR_AD_DB_PASSWORD       password injected into the URL (keeps it out of files)
    COMPRESSOR_AD_DB_PASSWORD_FILE  file holding that password (e.g. readable by the service user only)
    COMPRESSOR_AD_MODEL_DIR         model directory (versions live under it)
    COMPRESSOR_AD_CONFIG            TOML file to read when --config is not given
    COMPRESSOR_AD_OPCUA_PASSWORD    OPC UA user password (the variable is named by [opcua] password_env)
    COMPRESSOR_AD_WEBHOOK_SECRET    webhook HMAC secret (the variable is named by [notify] webhook_secret_env)
    COMPRESSOR_AD_SMTP_PASSWORD     SMTP login password (the variable is named by [notify] smtp_password_env)

Relative paths: the defaults (database file, model directory) are under PROJECT_ROOT, paths in a
TOML file (model_dir, a SQLite database, the [notify] files) are relative to that file's
directory, and paths from the environment or the command line are taken as given (relative to
the working directory). Numeric settings lie in RANGES.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from core.errors import SettingsError

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
THRESHOLD_RULES = ("false_alarm_rate", "mean_std", "alarm_budget")
ALARM_RULES = ("consecutive", "k_of_n", "cusum")
MAX_ALARM_WINDOWS = 128  # the k_of_n history is kept as a bit mask of the last n windows
MISSING_VALUE_RULES = ("skip", "impute")
SCORE_METHODS = ("mahalanobis", "mse")
DETECTORS = ("lstm_ae", "iforest")  # the names of models/registry.py, which checks that they match
# Basic256Sha256 or stronger; the deprecated Basic128Rsa15 and Basic256 are refused.
OPCUA_POLICIES = ("Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss", "None")
OPCUA_MODES = ("SignAndEncrypt", "Sign", "None")
OPCUA_TIMESTAMPS = ("source", "server")


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
    future_tolerance_s: float = 300.0  # rows stamped later than now + this are held back until their time comes
    max_abs_value: float = 1e15  # a reading beyond this magnitude is out_of_range (float32-max markers, say)
    value_ranges: tuple[tuple[str, float, float], ...] = ()  # (signal, low, high): the physical range of a signal


@dataclass(frozen=True)
class DetectionSettings:
    """How scores become anomalies and alerts (models/thresholds.py, models/alarms.py)."""

    detector: str = "lstm_ae"
    score: str = "mahalanobis"
    threshold_rule: str = "false_alarm_rate"
    false_alarm_rate: float = 0.02
    threshold_k: float = 2.0
    alarm_budget_per_hour: float = 0.1
    alarm_rule: str = "k_of_n"
    consecutive_trigger: int = 60
    alarm_n: int = 40
    alarm_k: int = 20
    cusum_h: float = 5.0
    quiet_windows: int = 60
    threshold_check_hours: float = 24.0  # after a live run: recent windows above the threshold vs the calibrated rate (0: off)


@dataclass(frozen=True)
class TrainingSettings:
    """Model training hyper-parameters."""

    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    calibration_fraction: float = 0.3
    calibration_folds: int = 5
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
class MetricsSettings:
    """Where `run --once` sends its run metrics (README, Operations); nothing when both are empty."""

    pushgateway: str = ""  # Prometheus Pushgateway URL, e.g. "http://pushgateway:9091"
    textfile: str = ""  # node-exporter textfile collector file, e.g. "/var/lib/prometheus/node-exporter/compressor_ad.prom"
    job: str = "compressor_ad"  # the Pushgateway job (grouping key, with instance = this host)
    run_interval_minutes: float = 15.0  # how often cron / the timer starts `run --once`; the alert rules count in it


@dataclass(frozen=True)
class OpcUaSettings:
    """Where the collector reads telemetry (`collect`): endpoint, security and the node map.

    Node map: `node_template` with {compressor} and {signal} for every id in `compressors`,
    overridden or extended per compressor by `nodes` ([opcua.nodes.ID] signal = "NodeId").
    """

    endpoint: str = ""
    security_policy: str = "Basic256Sha256"
    security_mode: str = "SignAndEncrypt"
    allow_insecure: bool = False
    application_uri: str = "urn:compressor-ad:collector"
    certificate: str = "var/opcua/client_cert.der"
    private_key: str = "var/opcua/client_key.pem"
    server_certificates: tuple[str, ...] = ()
    username: str = ""
    password_file: str = ""
    password_env: str = "COMPRESSOR_AD_OPCUA_PASSWORD"
    sampling_interval_s: float = 0.0  # 0 = [data] sampling_interval_s
    timestamp: str = "source"
    request_timeout_s: float = 5.0
    reconnect_max_delay_s: float = 60.0
    spool_path: str = "var/opcua_spool.sqlite"
    spool_max_rows: int = 1_000_000
    node_template: str = ""
    compressors: tuple[str, ...] = ()
    nodes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def insecure(self) -> bool:
        return "None" in (self.security_policy, self.security_mode)


@dataclass(frozen=True)
class AlertSettings:
    """When windows are not alarmed on (pipeline/suppression.py).

    stopped_when: ((signal, level), ...) from TOML `{ flow = 1000.0 }`: a row with any of these
    signals below its level is a stopped compressor; a window whose last row is stopped is
    `stopped`, one with an earlier stopped row `starting`; neither opens an alert episode.
    """

    stopped_when: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class NotifySettings:
    """Where notifications of alert episodes go (scheduler/notifier.py); nothing is sent when no channel is set.

    A channel is configured by webhook_url (webhook) or smtp_host (e-mail). Secrets come from a
    file (`*_file`) or, without one, the environment variable named by `*_env`.
    """

    on_end: bool = False  # also notify when an episode ends (quiet period reached)
    backfill: bool = False  # a backfill writes notifications too (default: only live runs do)
    attempts: int = 3  # tries per delivery pass
    backoff_s: float = 2.0  # first wait between tries; doubles per try and per failed pass
    backoff_max_s: float = 3600.0
    webhook_url: str = ""
    webhook_secret_file: str = ""
    webhook_secret_env: str = "COMPRESSOR_AD_WEBHOOK_SECRET"
    webhook_timeout_s: float = 10.0
    ca_file: str = ""  # extra CA bundle for the webhook and SMTP TLS (default: the system's)
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password_file: str = ""
    smtp_password_env: str = "COMPRESSOR_AD_SMTP_PASSWORD"
    smtp_timeout_s: float = 10.0
    email_from: str = ""
    email_to: tuple[str, ...] = ()

    @property
    def channels(self) -> tuple[str, ...]:
        """The configured channels, in delivery order."""
        return tuple(name for name, on in (("webhook", self.webhook_url), ("email", self.smtp_host)) if on)


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
    opcua: OpcUaSettings = field(default_factory=OpcUaSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

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
    "alerts": AlertSettings,
    "notify": NotifySettings,
    "metrics": MetricsSettings,
}


def _build_section(cls: type, values: Mapping[str, Any], section: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise SettingsError(f"unknown setting(s) in [{section}]: {', '.join(sorted(unknown))}")
    converted = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if name == "value_ranges":
            value = _value_ranges(value, section)
        elif name == "stopped_when":
            value = _levels(value, section)
        elif isinstance(default, tuple):
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


def _value_ranges(value: Any, section: str) -> tuple[tuple[str, float, float], ...]:
    """`{signal = [low, high], ...}` from TOML as ((signal, low, high), ...), sorted by signal."""
    if not isinstance(value, dict):
        raise SettingsError(f"[{section}] value_ranges must be a table: {{ signal = [low, high], ... }}")
    ranges = []
    for signal, bounds in sorted(value.items()):
        numbers = isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
        if not numbers or not float(bounds[0]) < float(bounds[1]):
            raise SettingsError(f"[{section}] value_ranges.{signal} must be [low, high] with low < high, got {bounds!r}")
        ranges.append((signal, float(bounds[0]), float(bounds[1])))
    return tuple(ranges)


def _levels(value: Any, section: str) -> tuple[tuple[str, float], ...]:
    """`{signal = level, ...}` from TOML as ((signal, level), ...), sorted by signal."""
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
        raise SettingsError(f"[{section}] stopped_when must be a table of signal = level, e.g. {{ flow = 1000.0 }}")
    return tuple((signal, float(level)) for signal, level in sorted(value.items()))


# (section, setting): (lowest, highest, lowest allowed itself); the highest is always allowed.
RANGES: dict[tuple[str, str], tuple[float, float, bool]] = {
    ("data", "sampling_interval_s"): (0, 86_400, False),
    ("data", "window"): (2, 10_000, True),
    ("data", "max_gap_factor"): (1, 1_000, True),
    ("data", "lateness_allowance_s"): (0, 366 * 86_400, True),
    ("data", "future_tolerance_s"): (0, 366 * 86_400, True),
    ("data", "max_abs_value"): (0, 1e300, False),
    ("detection", "threshold_k"): (0, 100, False),
    ("detection", "alarm_budget_per_hour"): (0, 3_600, False),
    ("detection", "consecutive_trigger"): (1, MAX_ALARM_WINDOWS, True),
    ("detection", "false_alarm_rate"): (0, 0.5, False),
    ("detection", "alarm_n"): (1, MAX_ALARM_WINDOWS, True),
    ("detection", "alarm_k"): (1, MAX_ALARM_WINDOWS, True),
    ("detection", "cusum_h"): (0, 1_000, False),
    ("detection", "quiet_windows"): (0, 100_000, True),
    ("detection", "threshold_check_hours"): (0, 8_760, True),
    ("training", "epochs"): (1, 100_000, True),
    ("training", "batch_size"): (1, 1_000_000, True),
    ("training", "learning_rate"): (0, 1, False),
    ("training", "patience"): (0, 100_000, True),
    ("training", "window_stride"): (1, 100_000, True),
    ("training", "seed"): (0, 2**32 - 1, True),
    ("training", "max_windows_per_compressor"): (1, 10**9, True),
    ("training", "calibration_fraction"): (0.05, 0.5, True),
    ("training", "calibration_folds"): (2, 20, True),
    ("scheduler", "min_records"): (0, 10**9, True),
    ("scheduler", "lease_seconds"): (1, 7 * 86_400, True),
    ("scheduler", "retry_attempts"): (1, 100, True),
    ("scheduler", "retry_base_delay_s"): (0, 600, True),
    ("scheduler", "read_chunk_rows"): (1, 10**8, True),
    ("scheduler", "parallel_compressors"): (0, 256, True),
    ("notify", "attempts"): (1, 100, True),
    ("notify", "backoff_s"): (0, 86_400, True),
    ("notify", "backoff_max_s"): (0, 7 * 86_400, True),
    ("notify", "webhook_timeout_s"): (0, 600, False),
    ("notify", "smtp_port"): (1, 65_535, True),
    ("notify", "smtp_timeout_s"): (0, 600, False),
    ("metrics", "run_interval_minutes"): (0, 7 * 1440, False),
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
    unknown = sorted({signal for signal, _, _ in data.value_ranges} - set(data.features))
    if unknown:
        raise SettingsError(f"[data] value_ranges names signal(s) that are not features: {', '.join(unknown)}")
    if data.missing_value_rule not in MISSING_VALUE_RULES:
        raise SettingsError(f"[data] missing_value_rule must be one of {MISSING_VALUE_RULES}")
    if det.detector not in DETECTORS:
        raise SettingsError(f"[detection] detector must be one of {DETECTORS}")
    if det.threshold_rule not in THRESHOLD_RULES:
        raise SettingsError(f"[detection] threshold_rule must be one of {THRESHOLD_RULES}")
    if det.score not in SCORE_METHODS:
        raise SettingsError(f"[detection] score must be one of {SCORE_METHODS}")
    if det.alarm_rule not in ALARM_RULES:
        raise SettingsError(f"[detection] alarm_rule must be one of {ALARM_RULES}")
    if det.alarm_k > det.alarm_n:
        raise SettingsError(f"[detection] alarm_k = {det.alarm_k} must not exceed alarm_n = {det.alarm_n}")
    unknown = sorted({signal for signal, _ in settings.alerts.stopped_when} - set(data.features))
    if unknown:
        raise SettingsError(f"[alerts] stopped_when names signal(s) that are not features: {', '.join(unknown)}")
    _validate_notify(settings.notify)
    _validate_opcua(settings)
    _validate_metrics(settings)
    return settings


def _validate_notify(notify: NotifySettings) -> None:
    for name in ("on_end", "backfill"):
        if not isinstance(getattr(notify, name), bool):
            raise SettingsError(f"[notify] {name} must be true or false, got {getattr(notify, name)!r}")
    if notify.webhook_url and not notify.webhook_url.startswith("https://"):
        raise SettingsError("[notify] webhook_url must be an https:// URL (the signature protects the body, TLS its secrecy)")
    if notify.smtp_host and not (notify.email_from and notify.email_to):
        raise SettingsError("[notify] smtp_host needs email_from and email_to")
    if notify.smtp_password_file and not notify.smtp_username:
        raise SettingsError("[notify] smtp_password_file needs smtp_username")
def _validate_metrics(settings: Settings) -> None:
    met = settings.metrics
    if met.pushgateway and not re.match(r"https?://[^/\s]+", met.pushgateway):
        raise SettingsError(f"[metrics] pushgateway must be an http:// or https:// URL, got {met.pushgateway!r}")
    if met.textfile and not met.textfile.endswith(".prom"):
        raise SettingsError(f"[metrics] textfile must end in .prom (the node exporter reads only those), got {met.textfile!r}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", met.job):
        raise SettingsError(f"[metrics] job must be 1-64 letters, digits, '_' or '-', got {met.job!r}")


def _validate_opcua(settings: Settings) -> None:
    opc = settings.opcua
    if opc.security_policy not in OPCUA_POLICIES:
        raise SettingsError(f"[opcua] security_policy must be one of {OPCUA_POLICIES} (Basic256Sha256 or stronger), got {opc.security_policy!r}")
    if opc.security_mode not in OPCUA_MODES:
        raise SettingsError(f"[opcua] security_mode must be one of {OPCUA_MODES}, got {opc.security_mode!r}")
    if not isinstance(opc.allow_insecure, bool):
        raise SettingsError(f"[opcua] allow_insecure must be true or false, got {opc.allow_insecure!r}")
    if (opc.security_policy == "None") != (opc.security_mode == "None"):
        raise SettingsError('[opcua] security_policy and security_mode must both be "None" or neither')
    if opc.insecure and not opc.allow_insecure:
        raise SettingsError('[opcua] security "None" sends telemetry unsigned and unencrypted: set allow_insecure = true to allow it')
    if opc.timestamp not in OPCUA_TIMESTAMPS:
        raise SettingsError(f"[opcua] timestamp must be one of {OPCUA_TIMESTAMPS}, got {opc.timestamp!r}")
    if opc.endpoint and not opc.endpoint.startswith("opc.tcp://"):
        raise SettingsError(f"[opcua] endpoint must be an opc.tcp:// URL, got {opc.endpoint!r}")
    if opc.sampling_interval_s < 0 or opc.request_timeout_s <= 0 or opc.reconnect_max_delay_s <= 0:
        raise SettingsError("[opcua] sampling_interval_s must be >= 0 (0 = [data] sampling_interval_s), request_timeout_s and reconnect_max_delay_s > 0")
    if opc.spool_max_rows < 1:
        raise SettingsError("[opcua] spool_max_rows must be at least 1")
    opcua_node_map(settings)


def opcua_node_map(settings: Settings) -> dict[str, dict[str, str]]:
    """compressor -> signal -> NodeId for every configured signal; SettingsError naming a gap."""
    opc, features = settings.opcua, settings.data.features
    if opc.compressors and not opc.node_template:
        raise SettingsError("[opcua] compressors needs node_template (e.g. \"ns=2;s={compressor}.{signal}\")")
    mapping: dict[str, dict[str, str]] = {}
    for cid in opc.compressors:
        try:
            mapping[cid] = {f: opc.node_template.format(compressor=cid, signal=f) for f in features}
        except (KeyError, IndexError, ValueError) as exc:
            raise SettingsError(f"[opcua] node_template {opc.node_template!r} is not valid: only {{compressor}} and {{signal}} may appear ({exc})") from None
    for cid, signals in opc.nodes.items():
        unknown = sorted(set(signals) - set(features))
        if unknown:
            raise SettingsError(f"[opcua.nodes.{cid}] names signal(s) not in [data] features: {', '.join(unknown)}")
        mapping.setdefault(cid, {}).update(signals)
        missing = [f for f in features if f not in mapping[cid]]
        if missing:
            raise SettingsError(f"[opcua.nodes.{cid}] lacks a NodeId for: {', '.join(missing)} (or list {cid} in compressors with a node_template)")
    return mapping


def _build_opcua(values: Mapping[str, Any]) -> OpcUaSettings:
    """[opcua] with its [opcua.nodes.ID] tables of signal = "NodeId" strings."""
    values = dict(values)
    nodes = values.pop("nodes", {})
    if not isinstance(nodes, dict) or not all(
        isinstance(v, dict) and all(isinstance(n, str) and n for n in v.values()) for v in nodes.values()
    ):
        raise SettingsError('[opcua.nodes.ID] must be tables of signal = "NodeId" strings')
    section = _build_section(OpcUaSettings, values, "opcua")
    return dataclasses.replace(section, nodes={str(cid): dict(signals) for cid, signals in nodes.items()})


# Settings that name a file; like model_dir and a SQLite path, a relative one read from a TOML file is
# taken relative to that file's directory.
_FILE_SETTINGS = {"notify": ("webhook_secret_file", "smtp_password_file", "ca_file")}


def _files_under(base: Path, section: str, values: Any) -> Any:
    """The section with its relative _FILE_SETTINGS paths resolved under `base` (absolute and empty ones unchanged)."""
    changes = {name: str(base / getattr(values, name)) for name in _FILE_SETTINGS.get(section, ()) if getattr(values, name)}
    return dataclasses.replace(values, **changes)


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
        except UnicodeDecodeError as exc:
            raise SettingsError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    base = Path(config_file).resolve().parent if config_file else PROJECT_ROOT
    top: dict[str, Any] = {"db_url": _under(PROJECT_ROOT, DEFAULT_DB_URL), "model_dir": PROJECT_ROOT / DEFAULT_MODEL_DIR}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise SettingsError(f"[{key}] must be a table")
            top[key] = _files_under(base, key, _build_section(_SECTIONS[key], value, key))
        elif key == "database":
            if not isinstance(value, dict) or not isinstance(value.get("url", ""), str) or set(value) - {"url"}:
                raise SettingsError('[database] must be a table with one string key: url = "..."')
            top["db_url"] = _under(base, value.get("url", DEFAULT_DB_URL))
        elif key == "model_dir":
            if not isinstance(value, str):
                raise SettingsError(f"model_dir must be a string, got {value!r}")
            top["model_dir"] = base / value
        elif key == "opcua":
            if not isinstance(value, dict):
                raise SettingsError("[opcua] must be a table")
            top["opcua"] = _build_opcua(value)
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
