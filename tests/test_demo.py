"""`demo`: simulate, train, score and report end to end, its report being the one `evaluate` gives."""
from __future__ import annotations

import sqlalchemy as sa

from core.settings import load_settings
from db.engine import make_engine
from db.schema import build_tables
from evaluation.evaluate import evaluate_range
from models.artifacts import load_bundle
from scheduler.cli import main
from scheduler.demo import DEMO_START
from datetime import timedelta

TINY = """
[training]
epochs = 1
batch_size = 128
patience = 1
window_stride = 4
"""


def test_demo_reports_what_evaluate_reports_on_the_stored_windows(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY, encoding="utf-8")
    out = tmp_path / "demo"
    code = main(["--config", str(config), "demo", "--compressors", "2", "--days", "2", "--train-days", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert (out / "demo_scores.png").stat().st_size > 0
    table = (out / "demo_table.txt").read_text(encoding="utf-8")
    assert "overall" in table and "C01" in table and "C02" in table
    assert "fault events caught:" in printed and "false-alarm events:" in printed and "alarm rule:" in printed

    # The stored windows are those evaluate scores in memory over the same range, so the demo's
    # pooled figures equal evaluate's.
    settings = load_settings(config, env={}, db_url=f"sqlite:///{out / 'demo.sqlite'}", model_dir=str(out / "models"))
    engine = make_engine(settings.db_url)
    tables = build_tables(settings)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(tables.detailed)).scalar()
            last = conn.execute(sa.select(sa.func.max(tables.source.c.timestamp))).scalar()
        train_end = DEMO_START + timedelta(days=1)
        result = evaluate_range(engine, tables, settings, load_bundle(settings.model_dir), train_end + timedelta(microseconds=1), last)
    finally:
        engine.dispose()
    overall = result.overall
    assert overall["windows"] == stored
    line = next(t for t in printed.splitlines() if t.startswith("fault events caught:"))
    assert line.startswith(f"fault events caught: {overall['events_detected']}/{overall['events']} ")
