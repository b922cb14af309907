"""Writes sql/<dialect>/schema.sql from the table definitions in db/schema.py (default settings).

    python sql/generate.py          rewrite the four schema.sql files
    python sql/generate.py --check  exit 1, naming the files, when a committed file is out of date

views.sql and roles.sql are written by hand; tests/test_sql_files.py runs them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.dialects import mssql, postgresql, sqlite  # noqa: E402
from sqlalchemy.dialects.mysql.mariadb import MariaDBDialect  # noqa: E402
from sqlalchemy.schema import CreateIndex, CreateTable  # noqa: E402

from core.settings import Settings  # noqa: E402
from db.schema import build_tables  # noqa: E402

SQL_DIR = ROOT / "sql"
DIALECTS = {
    "sqlite": sqlite.dialect,
    "postgresql": postgresql.dialect,
    "mariadb": MariaDBDialect,
    "mssql": mssql.dialect,
}


def _statement(ddl: sa.schema.ExecutableDDLElement, dialect: sa.Dialect) -> str:
    text = "\n".join(line.rstrip() for line in str(ddl.compile(dialect=dialect)).strip().splitlines())
    return text + (";\nGO" if dialect.name == "mssql" else ";")


def render(name: str) -> str:
    """The schema.sql text of one dialect: source and result tables with their indexes."""
    dialect = DIALECTS[name]()
    tables = build_tables(Settings())
    parts = [
        f"-- Tables and indexes of compressor anomaly detection for {name}, from db/schema.py (default",
        "-- settings: source table compressor_telemetry with the default signals). Rewrite with",
        "-- `python sql/generate.py` after changing db/schema.py; the scheduler also creates missing",
        "-- result tables itself. Adapt the source table to the plant's own table and column names.",
        "",
    ]
    for table in (tables.source, *tables.result_tables):
        parts.append(_statement(CreateTable(table), dialect))
        parts.extend(_statement(CreateIndex(index), dialect) for index in sorted(table.indexes, key=lambda i: i.name))
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name in DIALECTS:
        path = SQL_DIR / name / "schema.sql"
        text = render(name)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date (run python sql/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
