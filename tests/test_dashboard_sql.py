"""The Grafana dashboard's SQL run on real PostgreSQL and MariaDB servers: the tables from
db/schema.py, the anomaly_events view from sql/<dialect>/views.sql, a few result rows, and every
panel and variable query of that server's dashboard with Grafana's macros and variables
expanded as Grafana expands them."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from db_servers import database
from test_deploy import DASHBOARDS, ROOT, SQL_DATASOURCES

from core.settings import Settings
from db.engine import make_engine
from db.schema import build_tables, create_all

T0 = datetime(2026, 1, 1)
FROM, TO = T0 - timedelta(hours=1), T0 + timedelta(hours=2)
# compressor -> in_alert per minute from T0 (model v1): C01 has two episodes, C02 one, still open.
IN_ALERT = {"C01": [0, 1, 1, 1, 0, 0, 1, 1, 0, 0], "C02": [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]}


def time_group(dialect: str, column: str, seconds: int, alias: bool) -> str:
    """$__timeGroup / $__timeGroupAlias as Grafana's PostgreSQL and MySQL datasources expand them."""
    if dialect == "postgresql":
        expr = f"floor(extract(epoch from {column})/{seconds})*{seconds}"
    else:
        expr = f"UNIX_TIMESTAMP({column}) DIV {seconds} * {seconds}"
    return expr + (' AS "time"' if alias else "")


def expand(sql: str, dialect: str, compressors: list[str], version: str) -> str:
    """Grafana's macros and this dashboard's variables (single values quoted like :sqlstring)."""
    seconds = {"$__interval": 60, "'1h'": 3600}

    def group(match: re.Match, alias: bool) -> str:
        return time_group(dialect, match.group(1).strip(), seconds[match.group(2).strip()], alias)

    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),([^)]+)\)", lambda m: group(m, True), sql)
    sql = re.sub(r"\$__timeGroup\(([^,]+),([^)]+)\)", lambda m: group(m, False), sql)
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{FROM.isoformat(' ')}' AND '{TO.isoformat(' ')}'", sql)
    sql = sql.replace("$__timeFrom()", f"'{FROM.isoformat(' ')}'").replace("$__timeTo()", f"'{TO.isoformat(' ')}'")
    sql = sql.replace("${model_version:sqlstring}", "'" + version.replace("'", "''") + "'")
    sql = sql.replace("$compressor", ", ".join(f"'{c}'" for c in compressors))
    assert "$" not in sql, f"unexpanded macro or variable in {sql!r}"
    return sql


def filler(column: sa.Column):
    """A value for a NOT NULL column the test does not care about."""
    python_type = column.type.python_type
    return {bool: False, int: 0, float: 0.5, str: "x", datetime: T0}[python_type]


def seed(engine: sa.Engine, tables) -> None:
    detailed, summary, checkpoint = tables.detailed, tables.summary, tables.checkpoint
    defaults = {c.name: filler(c) for c in detailed.columns if not c.nullable and not c.primary_key}
    rows = []
    for version in ("v1", "v0"):
        for cid, flags in IN_ALERT.items():
            for minute, in_alert in enumerate(flags):
                rows.append({
                    **defaults, "batch_id": "b1", "compressor_id": cid, "model_version": version,
                    "window_end": T0 + timedelta(minutes=minute), "score": float(minute), "threshold": 3.0,
                    "is_anomaly": bool(in_alert), "triggered": bool(in_alert) and (minute == 0 or not flags[minute - 1]),
                    "in_alert": bool(in_alert), "top_features": f"sig{minute}",
                })
    summary_defaults = {c.name: filler(c) for c in summary.columns if not c.nullable and not c.primary_key}
    with engine.begin() as conn:
        conn.execute(detailed.insert(), rows)
        for version, mode in (("v0", "live"), ("v1", "live"), ("v2", "backfill")):  # v1 scored the latest live batch
            conn.execute(summary.insert(), [{**summary_defaults, "compressor_id": "C01", "mode": mode, "model_version": version}])
        conn.execute(checkpoint.insert(), [{"compressor_id": cid, "last_timestamp": T0, "consecutive_count": 0, "model_version": "v1", "updated_at": T0} for cid in IN_ALERT])


def targets(dialect: str) -> dict[str, str]:
    """Panel title (or variable name) -> SQL of this dialect's dashboard."""
    dashboard = json.loads(DASHBOARDS[dialect][0].read_text(encoding="utf-8"))
    found = {v["name"]: v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"}
    for panel in dashboard["panels"]:
        for t in panel.get("targets", []):
            if t["datasource"]["type"] in SQL_DATASOURCES:
                found[panel["title"]] = t["rawSql"]
    return found


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"])
def test_dashboard_sql_runs_on_the_server(dialect, tmp_path):
    tables = build_tables(Settings())
    with database(dialect, tmp_path) as url:
        engine = make_engine(url)
        create_all(engine, tables)
        with engine.begin() as conn:
            conn.exec_driver_sql((ROOT / "sql" / dialect / "views.sql").read_text(encoding="utf-8"))
        seed(engine, tables)
        results = {}
        with engine.connect() as conn:
            for title, sql in targets(dialect).items():
                results[title] = conn.exec_driver_sql(expand(sql, dialect, ["C01", "C02"], "v1")).all()
            only_c02 = conn.exec_driver_sql(expand(targets(dialect)["Alert episodes"], dialect, ["C02"], "v1")).all()
        engine.dispose()

    assert [r[0] for r in results["compressor"]] == ["C01", "C02"]
    assert results["model_version"][0][0] == "v1"  # the default: the latest live batch's version
    assert {r[0] for r in results["model_version"]} == {"v0", "v1", "v2"}
    episodes = [(r[2], r[0].replace(tzinfo=None), r[1].replace(tzinfo=None), int(r[4]), float(r[5]), r[6]) for r in results["Alert episodes"]]
    at = lambda minute: T0 + timedelta(minutes=minute)  # noqa: E731
    assert episodes == [  # newest first; one row per run of in_alert windows, v1 only
        ("C02", at(7), at(9), 3, 9.0, "sig9"),
        ("C01", at(6), at(7), 2, 7.0, "sig7"),
        ("C01", at(1), at(3), 3, 3.0, "sig3"),
    ]
    assert [r[2] for r in only_c02] == ["C02"]
    assert float(results["Alert episodes"][0][3]) == 120.0  # duration_s
    openings = results["Alert openings (the window each episode opened at)"]
    assert sorted((r[1], r[0].replace(tzinfo=None)) for r in openings) == [("C01", at(1)), ("C01", at(6)), ("C02", at(7))]
    per_hour = {r[1]: int(r[2]) for r in results["Anomalous windows per hour"]}
    assert per_hour == {"C01": 5, "C02": 3}
    scores = results["Anomaly score vs threshold: $compressor ($model_version)"]
    assert len(scores) == 10 and max(float(r[1]) for r in scores) == 9.0  # one row per minute, both compressors' highest
