"""Table definitions (SQLAlchemy Core): the source-table contract and the result tables."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, mysql

from core.settings import Settings
from db.alert_schema import AlertTables, ColumnTypes, build_alert_tables
from db.identifiers import UnsafeIdentifierError, check_derived, check_identifier, error_column

log = logging.getLogger(__name__)

DETAILED_TABLE = "lstm_predictions_detailed"
SUMMARY_TABLE = "lstm_batch_summary"
RESULTS_TABLE = "anomaly_detection_results"
CHECKPOINT_TABLE = "lstm_scheduler_checkpoint"
DAY_COUNTS_TABLE = "lstm_source_day_counts"
EVENTS_VIEW = "anomaly_events"

# Portable types that map to what each database does best.
Timestamp = sa.DateTime().with_variant(mssql.DATETIME2(), "mssql").with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Ids compare byte for byte on MariaDB/MySQL too (their default collations fold case; see db/ids.py).
Id = sa.Unicode(64).with_variant(mysql.VARCHAR(64, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb")
Text = sa.Unicode(1000)
Score = sa.Double().with_variant(mssql.FLOAT(53), "mssql")
AlarmStateText = sa.Unicode(100)  # models/alarms.py AlarmState.encode()

# Nullable columns added after the first release: create_all adds them to existing tables.
ADDED_COLUMNS = {
    DETAILED_TABLE: ("in_alert", "alarm_state", "operating_mode", "maintenance"),
    CHECKPOINT_TABLE: ("alarm_state",),
    SUMMARY_TABLE: ("maintenance_windows", "stopped_windows"),
}


@dataclass(frozen=True)
class Tables:
    """All tables of one configuration, bound to one MetaData."""

    metadata: sa.MetaData
    source: sa.Table
    detailed: sa.Table
    summary: sa.Table
    results: sa.Table
    checkpoint: sa.Table
    day_counts: sa.Table
    error_columns: tuple[str, ...]
    alerts: AlertTables

    @property
    def result_tables(self) -> tuple[sa.Table, ...]:
        a = self.alerts
        return (self.detailed, self.summary, self.results, self.checkpoint, self.day_counts, a.episodes, a.maintenance, a.notifications)


def build_tables(settings: Settings) -> Tables:
    """Tables for the configured source table, features and the fixed result tables."""
    src = settings.source
    metadata = sa.MetaData()
    features = [check_identifier(f, "feature column") for f in settings.data.features]
    label = [sa.Column(check_identifier(src.label_column, "label column"), sa.SmallInteger)] if src.label_column else []
    ts_col = check_identifier(src.timestamp_column, "timestamp column")
    id_col = check_identifier(src.compressor_column, "compressor column")
    index_name = f"ix_{check_identifier(src.table, 'source table')}_compressor_time".replace(" ", "_")
    check_derived({index_name: src.table}, "index")
    check_derived({error_column(f): f for f in features}, "error column")
    merged = {error_column(f) for f in features}
    if len(merged) < len(features):
        clash = sorted(f for f in features if sum(error_column(g) == error_column(f) for g in features) > 1)
        raise UnsafeIdentifierError(f"feature columns {', '.join(map(repr, clash))} give the same error column name: rename one")
    source = sa.Table(
        check_identifier(src.table, "source table"),
        metadata,
        sa.Column(ts_col, Timestamp, nullable=False),
        sa.Column(id_col, Id, nullable=False),
        *[sa.Column(f, Score) for f in features],
        *label,
        sa.Index(index_name, id_col, ts_col),
    )
    error_columns = tuple(error_column(f) for f in features)
    detailed = sa.Table(
        DETAILED_TABLE,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.Unicode(40), nullable=False),
        sa.Column("compressor_id", Id, nullable=False),
        sa.Column("window_end", Timestamp, nullable=False),
        sa.Column("model_version", sa.Unicode(40), nullable=False),
        sa.Column("score", Score, nullable=False),
        sa.Column("threshold", Score, nullable=False),
        sa.Column("is_anomaly", sa.Boolean, nullable=False),
        sa.Column("consecutive_count", sa.Integer, nullable=False),
        sa.Column("triggered", sa.Boolean, nullable=False),
        sa.Column("top_features", sa.Unicode(200)),
        sa.Column("in_alert", sa.Boolean),
        sa.Column("alarm_state", AlarmStateText),
        sa.Column("operating_mode", sa.Unicode(16)),  # running / starting / stopped ([alerts] stopped_when)
        sa.Column("maintenance", sa.Boolean),  # window_end inside a maintenance window
        *[sa.Column(c, Score) for c in error_columns],
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("compressor_id", "window_end", "model_version", name="uq_detailed_window"),
        sa.Index("ix_detailed_compressor_time", "compressor_id", "window_end"),
    )
    summary = sa.Table(
        SUMMARY_TABLE,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.Unicode(40), nullable=False),
        sa.Column("compressor_id", Id, nullable=False),
        sa.Column("mode", sa.Unicode(16), nullable=False),
        sa.Column("range_start", Timestamp),
        sa.Column("range_end", Timestamp),
        sa.Column("rows_read", sa.Integer, nullable=False),
        sa.Column("windows_scored", sa.Integer, nullable=False),
        sa.Column("anomaly_points", sa.Integer, nullable=False),
        sa.Column("triggered_events", sa.Integer, nullable=False),
        sa.Column("rows_rejected", sa.Integer, nullable=False),
        sa.Column("rejection_reasons", Text),
        sa.Column("gaps", sa.Integer, nullable=False),
        sa.Column("maintenance_windows", sa.Integer),
        sa.Column("stopped_windows", sa.Integer),
        sa.Column("model_version", sa.Unicode(40)),
        sa.Column("duration_s", Score, nullable=False),
        sa.Column("status", sa.Unicode(16), nullable=False),
        sa.Column("message", Text),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=False),
        sa.Index("ix_summary_compressor_time", "compressor_id", "started_at"),
    )
    results = sa.Table(
        RESULTS_TABLE,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("compressor_id", Id, nullable=False),
        sa.Column("timestamp", Timestamp, nullable=False),
        sa.Column("model_version", sa.Unicode(40), nullable=False),
        sa.Column("score", Score, nullable=False),
        sa.Column("is_anomaly", sa.Boolean, nullable=False),
        sa.UniqueConstraint("compressor_id", "timestamp", "model_version", name="uq_results_point"),
    )
    checkpoint = sa.Table(
        CHECKPOINT_TABLE,
        metadata,
        sa.Column("compressor_id", Id, primary_key=True),
        sa.Column("last_timestamp", Timestamp),
        sa.Column("consecutive_count", sa.Integer, nullable=False, default=0),
        sa.Column("alarm_state", AlarmStateText),
        sa.Column("model_version", sa.Unicode(40)),
        sa.Column("lease_owner", sa.Unicode(100)),
        sa.Column("lease_expires_at", Timestamp),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    # Source rows per compressor and UTC day, at or before counted_through, as of the last live
    # batch: how rows that arrive late beyond the lateness allowance are found (pipeline/lateness.py).
    day_counts = sa.Table(
        DAY_COUNTS_TABLE,
        metadata,
        sa.Column("compressor_id", Id, primary_key=True),
        sa.Column("day_start", Timestamp, primary_key=True),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("counted_through", Timestamp, nullable=False),
    )
    alerts = build_alert_tables(metadata, ColumnTypes(Id, Timestamp, Score, Text))
    return Tables(metadata, source, detailed, summary, results, checkpoint, day_counts, error_columns, alerts)


def create_all(engine: sa.Engine, tables: Tables, include_source: bool = True) -> None:
    """Create missing tables and add the ADDED_COLUMNS an older release's tables lack (never drops anything)."""
    wanted = list(tables.result_tables) + ([tables.source] if include_source else [])
    tables.metadata.create_all(engine, tables=wanted, checkfirst=True)
    add_missing_columns(engine, tables)


def add_missing_columns(engine: sa.Engine, tables: Tables) -> list[str]:
    """ALTER TABLE ... ADD the nullable ADDED_COLUMNS missing from existing result tables; return them.

    The statement is compiled by SQLAlchemy from the table definition (quoted identifiers, the
    dialect's own type names), never pasted from input.
    """
    inspector = sa.inspect(engine)
    added = []
    with engine.begin() as conn:
        for table in tables.result_tables:
            names = ADDED_COLUMNS.get(table.name, ())
            if not names:
                continue
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for name in names:
                if name in present:
                    continue
                column = sa.schema.CreateColumn(table.c[name]).compile(dialect=engine.dialect)
                conn.execute(sa.text(f"ALTER TABLE {engine.dialect.identifier_preparer.format_table(table)} ADD {column}"))
                added.append(f"{table.name}.{name}")
    if added:
        log.info("added column(s) %s to the existing result tables", ", ".join(added))
    return added
