"""Writes the PostgreSQL and MariaDB copies of the Grafana dashboard from the SQL Server one.

The dashboard's SQL is written once, in a form all three servers run (Grafana's $__time macros,
'1' for a true boolean / bit / tinyint, no quoted identifiers), so a copy differs only in its SQL
datasource, uid and title. tests/test_deploy.py checks the copies are in step and runs their SQL
on PostgreSQL and MariaDB.

    python deploy/grafana/generate.py
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "dashboards" / "compressor_anomaly.json"
SQL_SERVER = {"type": "mssql", "uid": "compressor-mssql"}
DIALECTS = {
    "postgresql": ("PostgreSQL", {"type": "grafana-postgresql-datasource", "uid": "compressor-postgresql"}),
    "mariadb": ("MariaDB / MySQL", {"type": "mysql", "uid": "compressor-mariadb"}),
}


def _swap(node, datasource: dict):
    """The JSON tree with every SQL Server datasource reference replaced."""
    if isinstance(node, dict):
        if node == SQL_SERVER:
            return dict(datasource)
        return {key: _swap(value, datasource) for key, value in node.items()}
    if isinstance(node, list):
        return [_swap(value, datasource) for value in node]
    return node


def dashboard_for(dialect: str) -> dict:
    name, datasource = DIALECTS[dialect]
    dashboard = _swap(json.loads(SOURCE.read_text(encoding="utf-8")), datasource)
    dashboard["uid"] = f"{dashboard['uid']}-{dialect}"
    dashboard["title"] = f"{dashboard['title']} ({name})"
    return dashboard


def target(dialect: str) -> Path:
    return HERE / dialect / "dashboards" / SOURCE.name


def render(dashboard: dict) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    for dialect in DIALECTS:
        path = target(dialect)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(dashboard_for(dialect)), encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parents[1])}")


if __name__ == "__main__":
    main()
