"""Streaming training data: chunked reads give the windows of a whole read; the window cap bounds memory."""
from __future__ import annotations

import numpy as np
import pytest

from core.errors import SettingsError
from core.settings import with_section
from db.engine import make_engine
from db.schema import build_tables, create_all
from db.source import write_telemetry
from models.scaler import RowMoments
from pipeline.training_data import load_normal_windows, load_training_data, stream_normal_windows
from simulation.fleet import simulate_fleet
from tests.conftest import START, tiny_settings


@pytest.fixture
def stored(tmp_path):
    """One compressor's half day on SQLite with a gap, labelled rows and a missing value inside."""
    settings = tiny_settings(tmp_path)
    frame = simulate_fleet(1, 0.5, start=START, seed=5).telemetry.reset_index(drop=True)
    frame = frame.drop(index=range(300, 340)).reset_index(drop=True)
    frame.loc[500:520, settings.source.label_column] = 1
    frame.loc[700, settings.data.features[0]] = np.nan
    engine, tables = make_engine(settings.db_url), build_tables(settings)
    create_all(engine, tables)
    write_telemetry(engine, tables, frame)
    yield settings, engine, tables, str(frame[settings.source.compressor_column].iloc[0]), len(frame)
    engine.dispose()


@pytest.mark.parametrize("missing_rule", ["skip", "impute"])
def test_chunked_reader_yields_the_windows_of_a_whole_read(stored, missing_rule):
    settings, engine, tables, cid, _ = stored
    settings = with_section(settings, "data", missing_value_rule=missing_rule)
    whole = load_normal_windows(engine, tables, settings, START, None)[cid]
    with engine.connect() as conn:
        chunks = list(stream_normal_windows(conn, tables, settings, cid, START, None, chunk_rows=97))
    assert len(chunks) > 5
    assert whole.breaks[1:].sum() >= 2  # the gap and the labelled rows break windows
    np.testing.assert_array_equal(np.concatenate([c.windows for c in chunks]), whole.windows)
    np.testing.assert_array_equal(np.concatenate([c.end_times for c in chunks]), whole.end_times)
    assert sum(len(c) for c in chunks) == len(whole) > 0


def test_window_cap_keeps_a_strided_sample_and_scales_on_all_rows(stored):
    settings, engine, tables, cid, rows = stored
    whole = load_normal_windows(engine, tables, settings, START, None)[cid]
    capped = with_section(settings, "training", max_windows_per_compressor=rows // 4)
    capped = with_section(capped, "scheduler", read_chunk_rows=113)
    sets, moments = load_training_data(engine, tables, capped, START, None)
    sample = sets[cid]
    stride = -(-rows // (rows // 4))
    assert len(sample) <= rows // 4 + 1
    np.testing.assert_array_equal(sample.windows, whole.windows[::stride])
    np.testing.assert_array_equal(sample.end_times, whole.end_times[::stride])
    assert sample.breaks.all()
    full = whole.last_rows().astype(np.float64)
    assert moments[cid].count == len(full)
    np.testing.assert_allclose(moments[cid].mean, full.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(moments[cid].std, full.std(axis=0), rtol=1e-9)


def test_window_cap_with_alarm_budget_is_a_clear_error(stored):
    settings, engine, tables, _, rows = stored
    capped = with_section(settings, "training", max_windows_per_compressor=rows // 4)
    capped = with_section(capped, "detection", threshold_rule="alarm_budget")
    with pytest.raises(SettingsError, match="alarm_budget threshold rule needs every window"):
        load_training_data(engine, tables, capped, START, None)


def test_row_moments_merge_chunks_like_one_pass():
    rows = np.random.default_rng(0).normal(5.0, 3.0, size=(1000, 4))
    moments = RowMoments(4)
    for part in np.array_split(rows, 7):
        moments.add(part)
    np.testing.assert_allclose(moments.mean, rows.mean(axis=0))
    np.testing.assert_allclose(moments.std, rows.std(axis=0))
