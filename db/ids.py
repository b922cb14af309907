"""Compressor ids the database cannot keep apart.

SQLite, PostgreSQL and SQL Server's default comparisons used here are exact enough for ids that
differ in case; MariaDB/MySQL compare text under the column's collation, where `C01` = `c01` (a
case-insensitive collation) and `C02` = `C02 ` (every PAD SPACE collation, binary ones included).
Two such ids would be read, deleted and checkpointed as one compressor: their rows averaged as
duplicates, each one's results replaced by the other's. They are refused instead, by name.
"""
from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa

from core.settings import Settings
from db.schema import Tables

LOOSE_DIALECTS = ("mysql", "mariadb")


def exact_ids(conn: sa.Connection, tables: Tables, settings: Settings) -> list[str]:
    """Distinct compressor ids of the source table, byte for byte, sorted."""
    column = tables.source.c[settings.source.compressor_column]
    if conn.dialect.name not in LOOSE_DIALECTS:
        return sorted(str(v) for v in conn.execute(sa.select(column).distinct()).scalars())
    raw = sa.cast(column, sa.LargeBinary)
    return sorted(bytes(v).decode("utf-8") for v in conn.execute(sa.select(raw).group_by(raw)).scalars())


def _source_collisions(conn: sa.Connection, tables: Tables, settings: Settings) -> set[str]:
    """Ids equal to another id under the source column's own collation."""
    column = tables.source.c[settings.source.compressor_column]
    raw = sa.cast(column, sa.LargeBinary)
    groups = sa.select(column).group_by(column).having(sa.func.count(sa.distinct(raw)) > 1)
    rows = conn.execute(sa.select(raw).where(column.in_(groups)).group_by(raw)).scalars()
    return {bytes(v).decode("utf-8") for v in rows}


def _result_key(conn: sa.Connection, tables: Tables):
    """How the result tables' id column compares: trailing spaces ignored; case too unless its collation is binary."""
    collation = conn.execute(
        sa.text(
            "SELECT collation_name FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = :table AND column_name = 'compressor_id'"
        ),
        {"table": tables.checkpoint.name},
    ).scalar()
    collation = (collation or "").lower()
    if "nopad_bin" in collation or collation.endswith("0900_bin"):
        return lambda cid: cid
    if collation.endswith("_bin"):
        return lambda cid: cid.rstrip(" ")
    return lambda cid: cid.casefold().rstrip(" ")


def colliding_ids(conn: sa.Connection, tables: Tables, settings: Settings, ids: list[str]) -> dict[str, list[str]]:
    """{id: the other ids it cannot be told apart from} for the ids the database would merge; empty elsewhere."""
    if conn.dialect.name not in LOOSE_DIALECTS or not ids:
        return {}
    key = _result_key(conn, tables)
    groups: dict[str, list[str]] = defaultdict(list)
    for cid in ids:
        groups[key(cid)].append(cid)
    refused = {cid for members in groups.values() if len(members) > 1 for cid in members}
    refused |= _source_collisions(conn, tables, settings) & set(ids)
    loose = {cid: cid.casefold().rstrip(" ") for cid in refused}
    return {cid: sorted(o for o in refused if o != cid and loose[o] == loose[cid]) for cid in sorted(refused)}
