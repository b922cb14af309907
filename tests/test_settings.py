"""Settings: defaults, TOML file, environment and explicit overrides, and clear errors."""
from pathlib import Path

import pytest

from core.errors import SettingsError
from core.settings import DEFAULT_FEATURES, PROJECT_ROOT, RANGES, Settings, load_settings, with_section


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file():
    settings = load_settings(None, env={})
    assert settings == Settings().replace(db_url=settings.db_url, model_dir=settings.model_dir)
    # defaults lie under the project root, whatever the working directory
    assert settings.db_url == f"sqlite:///{(PROJECT_ROOT / 'var/compressor_ad.sqlite').as_posix()}"
    assert settings.model_dir == PROJECT_ROOT / "var/models"
    assert settings.data.features == DEFAULT_FEATURES
    assert settings.max_gap_s == pytest.approx(settings.data.sampling_interval_s * settings.data.max_gap_factor)


def test_toml_overrides_only_what_it_names(tmp_path):
    path = write(
        tmp_path,
        """
model_dir = "elsewhere/models"
[database]
url = "sqlite:///from_file.sqlite"
[data]
window = 12
features = ["flow", "vibration"]
missing_value_rule = "impute"
[detection]
threshold_rule = "alarm_budget"
alarm_budget_per_hour = 0.25
[training]
epochs = 5
""",
    )
    settings = load_settings(path, env={})
    # relative paths of a file are relative to the file's directory
    assert settings.db_url == f"sqlite:///{(tmp_path / 'from_file.sqlite').as_posix()}"
    assert settings.model_dir == tmp_path / "elsewhere/models"
    assert settings.data.window == 12
    assert settings.data.features == ("flow", "vibration")
    assert settings.data.missing_value_rule == "impute"
    assert settings.detection.threshold_rule == "alarm_budget"
    assert settings.detection.alarm_budget_per_hour == 0.25
    assert settings.training.epochs == 5
    # untouched fields keep their defaults
    assert settings.data.sampling_interval_s == 30.0
    assert settings.training.batch_size == Settings().training.batch_size
    assert settings.source == Settings().source


def test_environment_beats_file_and_explicit_overrides_beat_environment(tmp_path):
    path = write(tmp_path, 'model_dir = "file_models"\n[database]\nurl = "sqlite:///file.sqlite"\n')
    from_file = load_settings(path, env={})
    assert (from_file.db_url, from_file.model_dir) == (f"sqlite:///{(tmp_path / 'file.sqlite').as_posix()}", tmp_path / "file_models")
    env = {"COMPRESSOR_AD_DB_URL": "sqlite:///env.sqlite", "COMPRESSOR_AD_MODEL_DIR": str(tmp_path / "env_models")}
    settings = load_settings(path, env=env)
    assert settings.db_url == "sqlite:///env.sqlite"
    assert settings.model_dir == tmp_path / "env_models"
    explicit = load_settings(path, env=env, db_url="sqlite:///cli.sqlite", model_dir=str(tmp_path / "cli_models"))
    assert explicit.db_url == "sqlite:///cli.sqlite"
    assert explicit.model_dir == tmp_path / "cli_models"
    # None means "not given on the command line": the environment still applies
    assert load_settings(path, env=env, db_url=None).db_url == "sqlite:///env.sqlite"


def test_config_file_from_environment(tmp_path):
    path = write(tmp_path, "[data]\nwindow = 7\n")
    assert load_settings(None, env={"COMPRESSOR_AD_CONFIG": str(path)}).data.window == 7


def test_with_section_changes_one_section_and_validates():
    settings = with_section(Settings(), "training", epochs=2, seed=9)
    assert (settings.training.epochs, settings.training.seed) == (2, 9)
    assert settings.data == Settings().data
    with pytest.raises(SettingsError, match=r"window = 1 is out of range: must be in \[2, 10000\]"):
        with_section(settings, "data", window=1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[data]\nwindoww = 10\n", r"unknown setting\(s\) in \[data\]: windoww"),
        ("[training]\nepochs = 3\nfoo = 1\nbar = 2\n", r"unknown setting\(s\) in \[training\]: bar, foo"),
        ("[nonsense]\nx = 1\n", "unknown section or key in config: nonsense"),
        ("data = 5\n", r"\[data\] must be a table"),
        ('[data]\nwindow = "30"\n', r"\[data\] window must be a number, got '30'"),
        ("[data]\nwindow = 2.5\n", r"\[data\] window must be an integer, got 2.5"),
        ("[training]\nepochs = true\n", r"\[training\] epochs must be a number, got True"),
        ('[data]\nfeatures = "flow"\n', r"\[data\] features must be a list of strings"),
        ("[data]\nfeatures = [1, 2]\n", r"\[data\] features must be a list of strings"),
        ("[source]\ntable = 5\n", r"\[source\] table must be a string, got 5"),
        ('database = "sqlite:///x"\n', r"\[database\] must be a table"),
        ("[database]\nurl = 5\n", r"\[database\] must be a table with one string key"),
        ("model_dir = 5\n", "model_dir must be a string"),
        ("[data]\nwindow = 1\n", r"\[data\] window = 1 is out of range: must be in \[2, 10000\]"),
        ("[data]\nfeatures = []\n", r"\[data\] features must not be empty"),
        ('[data]\nfeatures = ["flow", "flow"]\n', r"\[data\] features contains duplicates"),
        ("[data]\nsampling_interval_s = 0\n", r"sampling_interval_s = 0 is out of range: must be in \(0, 86400\]"),
        ("[data]\nmax_gap_factor = 0.5\n", r"max_gap_factor = 0.5 is out of range"),
        ('[data]\nmissing_value_rule = "zero"\n', r"\[data\] missing_value_rule must be one of"),
        ('[detection]\ndetector = "lof"\n', r"\[detection\] detector must be one of \('lstm_ae', 'iforest'\)"),
        ('[detection]\nthreshold_rule = "p99"\n', r"\[detection\] threshold_rule must be one of"),
        ('[detection]\ndetector = "nope"\n', r"\[detection\] detector must be one of \('lstm_ae', 'iforest'\)"),
        ("[training]\ncalibration_fraction = 0.7\n", r"\[training\] calibration_fraction = 0.7 is out of range: must be in \[0.05, 0.5\]"),
        ('[detection]\nalarm_rule = "vote"\n', r"\[detection\] alarm_rule must be one of"),
        ("[detection]\nalarm_k = 50\n", r"alarm_k = 50 must not exceed alarm_n = 40"),
        ("[detection]\nfalse_alarm_rate = 0.0\n", r"false_alarm_rate = 0.0 is out of range: must be in \(0, 0.5\]"),
        ("[detection]\nquiet_windows = -1\n", r"quiet_windows = -1 is out of range"),
        ("[detection]\nconsecutive_trigger = 0\n", r"\[detection\] consecutive_trigger = 0 is out of range"),
        ("[scheduler]\nparallel_compressors = -1\n", r"\[scheduler\] parallel_compressors = -1 is out of range"),
        ("[data\nwindow = 3\n", "is not valid TOML"),
    ],
)
def test_bad_settings_raise_settings_error_with_a_clear_message(tmp_path, text, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(write(tmp_path, text), env={})


def test_a_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[source]\ntable = "d\xe9bit"\n'.encode("latin-1"))
    with pytest.raises(SettingsError, match=r"latin1.toml is not UTF-8 text \(byte 19\)"):
        load_settings(path, env={})


def test_missing_config_file(tmp_path):
    with pytest.raises(SettingsError, match="config file not found: .*nowhere.toml"):
        load_settings(tmp_path / "nowhere.toml", env={})


def test_the_example_config_loads_and_states_the_defaults():
    example = Path(__file__).resolve().parents[1] / "config.example.toml"
    assert load_settings(example, env={}) == load_settings(None, env={})  # paths resolved alike: the file sits at the project root
def test_defaults_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, env={})
    assert settings.model_dir == PROJECT_ROOT / "var/models" and str(PROJECT_ROOT) in settings.db_url
    assert load_settings(None, env={}, model_dir="given").model_dir == Path("given")  # command line: as given


def test_every_range_is_checked_at_both_ends():
    for (section, name), (low, high, low_allowed) in RANGES.items():
        default = getattr(getattr(Settings(), section), name)
        kind = int if isinstance(default, int) else float
        below = kind(low - 1) if low_allowed else kind(low)
        above = kind(high * 2 + 1)
        for value in (below, above):
            with pytest.raises(SettingsError, match=rf"\[{section}\] {name} = .* is out of range"):
                with_section(Settings(), section, **{name: value})
        room = {"alarm_n": int(high)} if name == "alarm_k" else {}  # alarm_k may not exceed alarm_n
        with_section(Settings(), section, **{name: kind(high)}, **room)  # the highest allowed value is accepted


@pytest.mark.parametrize(
    "text, message",
    [
        ("[detection]\nthreshold_k = -5\n", r"\[detection\] threshold_k = -5 is out of range: must be in \(0, 100\]"),
        ("[detection]\nconsecutive_trigger = 1000000\n", r"consecutive_trigger = 1000000 is out of range: must be in \[1, 128\]"),
        ("[scheduler]\nlease_seconds = 0\n", r"lease_seconds = 0 is out of range"),
        ("[training]\nlearning_rate = 0.0\n", r"learning_rate = 0.0 is out of range"),
    ],
)
def test_out_of_range_values_in_a_file_are_refused(tmp_path, text, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(write(tmp_path, text), env={})


def test_notify_files_are_relative_to_the_config_file(tmp_path, monkeypatch):
    """[notify] secret, password and CA files named relative in a config file are found from any working directory."""
    from alert_servers import self_signed
    from scheduler.channels import build_channels

    etc = tmp_path / "etc"
    (etc / "secrets").mkdir(parents=True)
    cert, _ = self_signed(etc)
    (etc / "secrets" / "hook").write_text("whsec-relative\n", encoding="utf-8")
    absolute = tmp_path / "smtp_password"
    absolute.write_text("pw\n", encoding="utf-8")
    config = etc / "compressor-ad.toml"
    config.write_text(
        f"""
[notify]
webhook_url = "https://127.0.0.1:8443/hooks"
webhook_secret_file = "secrets/hook"
ca_file = "{cert.name}"
smtp_host = "127.0.0.1"
smtp_username = "alerts"
smtp_password_file = "{absolute.as_posix()}"
email_from = "a@plant"
email_to = ["b@plant"]
""",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    notify = load_settings(config, env={}).notify
    assert (notify.webhook_secret_file, notify.ca_file, notify.smtp_password_file) == (str(etc / "secrets" / "hook"), str(cert), str(absolute))
    assert set(build_channels(notify)) == {"webhook", "email"}  # every file read from `elsewhere`
    assert load_settings(write(tmp_path, "[notify]\nattempts = 2\n"), env={}).notify.ca_file == ""  # unset stays unset
