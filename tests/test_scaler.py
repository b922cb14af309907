"""Per-compressor scaling: fit, transform, JSON round trip, unknown compressor."""
import json

import numpy as np
import pytest

from core.errors import UnknownCompressorError
from models.scaler import CompressorScaler


@pytest.fixture
def rows():
    rng = np.random.default_rng(1)
    return {
        "C01": rng.normal([10.0, -5.0, 100.0], [1.0, 0.5, 20.0], size=(500, 3)),
        "C02": rng.normal([0.0, 3.0, 7.0], [2.0, 0.1, 1.0], size=(400, 3)),
    }


def test_fit_and_transform_standardise_each_compressor(rows):
    scaler = CompressorScaler()
    for cid, values in rows.items():
        scaler.fit(values, cid)
    for cid, values in rows.items():
        scaled = scaler.transform(values, cid)
        assert scaled.dtype == np.float32
        np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(scaled.std(axis=0), 1.0, atol=1e-4)
    # each compressor keeps its own statistics
    assert not np.allclose(scaler.mean_["C01"], scaler.mean_["C02"])


def test_transform_windows_on_the_last_axis(rows):
    scaler = CompressorScaler().fit(rows["C01"], "C01")
    windows = rows["C01"][:60].reshape(6, 10, 3)
    np.testing.assert_allclose(scaler.transform(windows, "C01"), scaler.transform(rows["C01"][:60], "C01").reshape(6, 10, 3), rtol=1e-6)


def test_constant_signal_does_not_divide_by_zero():
    values = np.column_stack([np.full(50, 4.0), np.arange(50.0)])
    scaled = CompressorScaler().fit(values, "C01").transform(values, "C01")
    assert np.isfinite(scaled).all()
    np.testing.assert_array_equal(scaled[:, 0], 0.0)


def test_dict_round_trip_through_json(rows):
    scaler = CompressorScaler()
    for cid, values in rows.items():
        scaler.fit(values, cid)
    restored = CompressorScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert sorted(restored.mean_) == ["C01", "C02"]
    for cid, values in rows.items():
        np.testing.assert_array_equal(restored.transform(values, cid), scaler.transform(values, cid))


def test_unknown_compressor_and_too_few_rows(rows):
    scaler = CompressorScaler().fit(rows["C01"], "C01")
    with pytest.raises(UnknownCompressorError, match="'C09' has no scaler"):
        scaler.transform(rows["C01"], "C09")
    with pytest.raises(ValueError, match="C03: need at least 2 rows"):
        CompressorScaler().fit(rows["C01"][:1], "C03")
