"""Deployment files, checked without Docker: they parse, their commands are valid CLI calls, the
dashboard's PromQL uses only exported metrics and its SQL only existing tables and columns."""
from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from core.settings import Settings
from db.schema import build_tables
from scheduler.cli import build_parser
from scheduler.metrics import DaemonMetrics
from service.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "compressor_anomaly.json"
# The SQL Server dashboard, and the copies deploy/grafana/generate.py makes for the other servers.
DASHBOARDS = {
    "mssql": (DASHBOARD, DEPLOY / "grafana/provisioning/datasources/datasources.yml"),
    "postgresql": (DEPLOY / "grafana/postgresql/dashboards/compressor_anomaly.json", DEPLOY / "grafana/postgresql/datasources.yml"),
    "mariadb": (DEPLOY / "grafana/mariadb/dashboards/compressor_anomaly.json", DEPLOY / "grafana/mariadb/datasources.yml"),
}
SQL_DATASOURCES = {"mssql", "grafana-postgresql-datasource", "mysql"}

SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"), "info": ("_info",)}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "le"}
SQL_WORDS = {
    "select", "distinct", "from", "where", "and", "or", "not", "in", "is", "null", "as", "order", "by", "group",
    "asc", "desc", "cast", "sum", "max", "min", "avg", "count", "case", "when", "then", "else", "end",
}


# ------------------------------------------------------------------------------ helpers
def exported_metric_names() -> set[str]:
    """Every series name the daemon and the service can expose (labelled families included)."""
    names = set()
    for registry in (DaemonMetrics().registry, ServiceMetrics().registry):
        for family in registry.collect():
            base = family.name[: -len("_info")] if family.type == "info" and family.name.endswith("_info") else family.name
            names |= {base + suffix for suffix in SUFFIXES[family.type]}
    return names


def dashboard_targets(path: Path = DASHBOARD) -> list[dict]:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    return [t for p in dashboard["panels"] for t in p.get("targets", [])] + [
        {"datasource": v["datasource"], "rawSql": v["query"]} for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]


def promql_metric_names(expr: str) -> set[str]:
    """Identifiers of an expression that name series: not functions, keywords, labels or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    found = set()
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", expr):
        name, is_call = match.group(1), match.group(2)
        if not is_call and name not in PROMQL_WORDS:
            found.add(name)
    return found


def sql_references(sql: str) -> tuple[set[str], set[str]]:
    """(tables, columns) a dashboard query reads; Grafana macros unwrapped, aliases and literals dropped."""
    sql = re.sub(r"\$__time(?:Filter|GroupAlias|Group)\(\s*([^,)]+)[^)]*\)", r" \1 ", sql)
    sql = re.sub(r"\$\{[^}]*\}|\$\w+", " ", sql)
    sql = re.sub(r"'[^']*'", " ", sql)
    sql = re.sub(r"[\[\]\"`]", " ", sql)
    sql = re.sub(r"\bAS\s+\w+", " ", sql, flags=re.IGNORECASE)  # aliases, and the type of a CAST
    tables = set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", sql, flags=re.IGNORECASE))
    words = set(re.findall(r"\b[A-Za-z_]\w*\b", sql)) - tables
    columns = {w for w in words if w.lower() not in SQL_WORDS}
    return tables, columns


def cli_args_after_entry_point(command: str, posix: bool = True) -> list[str]:
    tokens = shlex.split(command, posix=posix)
    position = next(i for i, t in enumerate(tokens) if t.endswith("run_scheduler.py"))
    return [t.rstrip("'") for t in tokens[position + 1 :]]


def assert_valid_cli(args: list[str]):
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"not a valid command line: {args}")


# -------------------------------------------------------------------------------- tests
def test_dashboard_promql_uses_only_exported_metrics():
    exported = exported_metric_names()
    promql = [t for t in dashboard_targets() if t["datasource"]["type"] == "prometheus"]
    assert len(promql) >= 8
    used = set()
    for target in promql:
        names = promql_metric_names(target["expr"])
        assert names, f"no metric in {target['expr']!r}"
        used |= names
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    for needed in ("compressor_ad_checkpoint_lag_seconds", "compressor_ad_runs_failed_total", "compressor_ad_last_success_timestamp_seconds"):
        assert needed in used


def test_promql_name_extraction():
    assert promql_metric_names('sum by (le) (rate(a_bucket{route="/x"}[5m])) / b_total') == {"a_bucket", "b_total"}
    assert promql_metric_names("time() - last_success") == {"last_success"}


def schema_columns() -> dict[str, set[str]]:
    """Columns of every table and of the anomaly_events view (sql/sqlite/views.sql on a scratch SQLite file)."""
    tables = build_tables(Settings())
    known = {t.name: {c.name for c in t.columns} for t in (tables.source, *tables.result_tables)}
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        tables.metadata.create_all(conn)
        conn.connection.executescript((ROOT / "sql/sqlite/views.sql").read_text(encoding="utf-8"))
        known["anomaly_events"] = {c["name"] for c in sa.inspect(conn).get_columns("anomaly_events")}
    engine.dispose()
    return known


@pytest.mark.parametrize("dialect", DASHBOARDS)
def test_dashboard_sql_references_existing_tables_and_columns(dialect):
    known = schema_columns()
    targets = dashboard_targets(DASHBOARDS[dialect][0])
    assert {t["datasource"]["type"] for t in targets} - {"prometheus"} == {_sql_type(dialect)}
    queries = [t["rawSql"] for t in targets if t["datasource"]["type"] in SQL_DATASOURCES]
    assert len(queries) >= 6
    read = set()
    for sql in queries:
        used_tables, used_columns = sql_references(sql)
        assert used_tables and used_tables <= set(known), f"unknown table in {sql!r}"
        available = set().union(*(known[t] for t in used_tables))
        assert used_columns <= available, f"unknown column(s) {sorted(used_columns - available)} in {sql!r}"
        read |= used_tables
    assert {"lstm_predictions_detailed", "anomaly_events", "lstm_batch_summary", "lstm_scheduler_checkpoint"} <= read


def _sql_type(dialect: str) -> str:
    return {"mssql": "mssql", "postgresql": "grafana-postgresql-datasource", "mariadb": "mysql"}[dialect]


@pytest.mark.parametrize("dialect", DASHBOARDS)
def test_dashboard_shows_one_model_version_and_follows_the_compressor(dialect):
    dashboard = json.loads(DASHBOARDS[dialect][0].read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    version = variables["model_version"]
    assert not version["multi"] and not version["includeAll"] and version["current"] == {}  # Grafana picks the first: the promoted one
    for target in dashboard_targets(DASHBOARDS[dialect][0]):
        if target["datasource"]["type"] in SQL_DATASOURCES and "FROM lstm_scheduler_checkpoint" not in target["rawSql"] and "FROM lstm_batch_summary" not in target["rawSql"]:
            assert "model_version = ${model_version:sqlstring}" in target["rawSql"] and "IN ($compressor)" in target["rawSql"], target["rawSql"]
        if target["datasource"]["type"] == "prometheus" and "compressor_id" in target.get("legendFormat", ""):
            assert 'compressor_id=~"$compressor"' in target["expr"], target["expr"]
    titles = {p["title"]: p for p in dashboard["panels"]}
    assert "FROM anomaly_events" in titles["Alert episodes"]["targets"][0]["rawSql"] and titles["Alert episodes"]["type"] == "table"


def test_dashboard_copies_are_generated_from_the_sql_server_one():
    sys.path.insert(0, str(DEPLOY / "grafana"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    for dialect in ("postgresql", "mariadb"):
        assert DASHBOARDS[dialect][0].read_text(encoding="utf-8") == generate.render(generate.dashboard_for(dialect)), (
            f"{DASHBOARDS[dialect][0]} is out of date: run python deploy/grafana/generate.py"
        )


def test_sql_reference_extraction():
    sql = "SELECT $__timeGroupAlias([timestamp], '1h'), x AS metric FROM t WHERE $__timeFilter(y) AND c IN ($v) GROUP BY $__timeGroup([timestamp], '1h')"
    assert sql_references(sql) == ({"t"}, {"timestamp", "x", "y", "c"})


@pytest.mark.parametrize("dialect", DASHBOARDS)
def test_dashboard_datasources_are_provisioned(dialect):
    path, datasources = DASHBOARDS[dialect]
    provisioned = yaml.safe_load(datasources.read_text(encoding="utf-8"))
    uids = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    for target in dashboard_targets(path):
        assert uids.get(target["datasource"]["uid"]) == target["datasource"]["type"]
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text(encoding="utf-8"))["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_stack():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"mssql", "db-init", "scheduler", "api", "prometheus", "grafana"} <= set(services)
    assert services["mssql"]["image"].startswith("mcr.microsoft.com/mssql/server")

    for name in ("scheduler", "api", "seed"):
        assert_valid_cli(services[name]["command"])
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / services[name]["build"]["context"] / services[name]["build"]["dockerfile"]).is_file()
    daemon = assert_valid_cli(services["scheduler"]["command"])
    assert (daemon.command, daemon.interval, daemon.metrics_port, daemon.metrics_host) == ("run", 60, 9108, "0.0.0.0")
    api = assert_valid_cli(services["api"]["command"])
    assert api.command == "serve" and not api.insecure_no_auth
    assert services["api"]["environment"]["COMPRESSOR_AD_API_KEY_FILE"] == "/run/secrets/api_key"

    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{source} is mounted but missing"
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"]
    init = (DEPLOY / "mssql" / "init.sh").read_text(encoding="utf-8")
    for script in re.findall(r"for script in ([\w ]+); do", init)[0].split():
        assert (ROOT / "sql" / "mssql" / f"{script}.sql").is_file()
    assert "/init/logins.sql" in init and (DEPLOY / "mssql" / "logins.sql").is_file()


def test_prometheus_scrapes_the_compose_services():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {job["job_name"]: job for job in config["scrape_configs"]}
    assert targets["compressor-ad-scheduler"]["static_configs"][0]["targets"] == ["scheduler:9108"]
    api = targets["compressor-ad-api"]
    assert api["static_configs"][0]["targets"] == ["api:8000"]
    assert api["authorization"]["credentials_file"] == "/run/secrets/api_key"
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    assert "./prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in services["prometheus"]["volumes"]
    assert "./alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" in services["alertmanager"]["volumes"]


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", text, flags=re.MULTILINE)
    assert "COPY requirements.txt ." in text and "requirements-dev" not in text
    users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/health" in text and "run_scheduler.py --log-level ERROR status" in text
    assert "unixodbc" in text and "tdsodbc" in text
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, flags=re.MULTILINE).group(1))
    command = json.loads(re.search(r"^CMD (\[.+\])$", text, flags=re.MULTILINE).group(1))
    assert entry == ["python", "run_scheduler.py"]
    assert assert_valid_cli(command).metrics_port == 9108
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git", "tests", "deploy/secrets"} <= set(ignored)


@pytest.mark.parametrize("unit", ["compressor-ad.service", "compressor-ad-api.service", "compressor-ad-once.service"])
def test_systemd_units(unit):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(DEPLOY / "systemd" / unit, encoding="utf-8")
    service = parser["Service"]
    assert service["User"] == "compressor-ad" and service["EnvironmentFile"].startswith("/etc/compressor-ad/")
    if service["Type"] != "oneshot":
        assert service["Restart"] == "on-failure"
        assert parser["Install"]["WantedBy"] == "multi-user.target"
    args = assert_valid_cli(cli_args_after_entry_point(service["ExecStart"]))
    assert args.command in ("run", "serve")
    if unit == "compressor-ad.service":
        assert args.interval and args.metrics_port == 9108
    if unit == "compressor-ad-once.service":
        assert args.once
        timer = configparser.ConfigParser(interpolation=None)
        timer.read(DEPLOY / "systemd" / "compressor-ad-once.timer", encoding="utf-8")
        assert timer["Timer"]["OnCalendar"]


def test_cron_line():
    files = sorted(p.name for p in (DEPLOY / "cron").iterdir())
    # run-parts (Debian's cron) ignores /etc/cron.d files whose names are not [A-Za-z0-9_-]+
    assert files == ["compressor-ad"] and all(re.fullmatch(r"[A-Za-z0-9_-]+", name) for name in files)
    lines = [text for text in (DEPLOY / "cron" / "compressor-ad").read_text(encoding="utf-8").splitlines() if text and not text.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)
    assert len(fields[:5]) == 5 and fields[5] == "compressor-ad"
    inner = shlex.split(fields[6])[2]  # /bin/sh -c '...'
    assert inner.startswith("mkdir -p /opt/compressor-ad/var/log && exec >>/opt/compressor-ad/var/log/cron.log 2>&1;")
    assert ">>" not in fields[6].rpartition("'")[2], "no redirection outside the shell that creates var/log"
    assert assert_valid_cli(cli_args_after_entry_point(inner)).once


@pytest.mark.slow
def test_cron_line_creates_its_log_directory(tmp_path):
    """The line's shell part, run with /opt/compressor-ad moved under tmp_path, creates var/log and writes there."""
    line = next(text for text in (DEPLOY / "cron" / "compressor-ad").read_text(encoding="utf-8").splitlines() if text and not text.startswith("#"))
    inner = shlex.split(line.split(None, 6)[6])[2]
    prefix = inner.split("; set -a;")[0].replace("/opt/compressor-ad", str(tmp_path / "opt"))
    done = subprocess.run(["/bin/sh", "-c", prefix + "; echo reached"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "opt" / "var" / "log" / "cron.log").read_text() == "reached\n"


SERVICE_UNITS = ["compressor-ad.service", "compressor-ad-once.service", "compressor-ad-api.service"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (make system-deps installs it as root)")
@pytest.mark.parametrize("unit", SERVICE_UNITS)
def test_systemd_units_are_sandboxed(unit):
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(DEPLOY / "systemd" / unit)],
        capture_output=True, text=True, timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert level, done.stdout[-2000:] + done.stderr[-2000:]
    assert float(level.group(1)) <= 3.0, done.stdout


def _systemd_is_pid1() -> bool:
    return Path("/run/systemd/system").is_dir()


@pytest.mark.slow
@pytest.mark.skipif(not _systemd_is_pid1(), reason="systemd is not PID 1 here: a sandboxed unit can only be started under systemd")
@pytest.mark.parametrize("unit", SERVICE_UNITS)
def test_systemd_sandbox_still_runs_the_cli(unit):
    """The unit's sandbox settings, applied to a transient unit that runs `--help` from this checkout."""
    text = (DEPLOY / "systemd" / unit).read_text(encoding="utf-8")
    properties = []
    for raw in text.split("[Service]", 1)[1].split("[Install]")[0].splitlines():
        key, _, value = raw.partition("=")
        if raw.startswith("#") or not _ or key in {"Type", "User", "Group", "WorkingDirectory", "EnvironmentFile", "ExecStart", "Restart", "RestartSec", "ReadWritePaths", "KillSignal", "TimeoutStopSec", "TimeoutStartSec"}:
            continue
        properties += ["-p", f"{key}={value}"]
    done = subprocess.run(
        ["systemd-run", "--wait", "--quiet", "--pipe", "-p", f"WorkingDirectory={ROOT}", *properties, sys.executable, "run_scheduler.py", "--help"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0 and "usage: run_scheduler.py" in done.stdout, done.stderr


def test_windows_task():
    script = (DEPLOY / "windows" / "register_task.ps1").read_text(encoding="utf-8")
    assert re.search(r"schtasks /Create .*/SC MINUTE /MO \$EveryMinutes", script)
    assert "run_once.cmd" in script
    cmd = (DEPLOY / "windows" / "run_once.cmd").read_text(encoding="utf-8")
    line = next(text for text in cmd.splitlines() if "run_scheduler.py" in text)
    assert assert_valid_cli(cli_args_after_entry_point(line, posix=False)).once


def test_env_example_only_names_known_variables():
    text = (DEPLOY / "systemd" / "compressor-ad.env.example").read_text(encoding="utf-8")
    names = re.findall(r"^([A-Z_]+)=", text, flags=re.MULTILINE)
    known = {"COMPRESSOR_AD_DB_URL", "COMPRESSOR_AD_DB_PASSWORD_FILE", "COMPRESSOR_AD_MODEL_DIR", "COMPRESSOR_AD_API_KEY_FILE", "TF_CPP_MIN_LOG_LEVEL"}
    assert set(names) <= known and "COMPRESSOR_AD_DB_URL" in names
    source = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "core/settings.py", ROOT / "db/engine.py", ROOT / "service/auth.py"))
    for name in set(names) - {"TF_CPP_MIN_LOG_LEVEL"}:
        assert name in source, f"{name} is not read by the code"
