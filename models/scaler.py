"""Per-compressor standard scaling, stored as plain JSON (no pickles)."""
from __future__ import annotations

import numpy as np

from core.errors import UnknownCompressorError

_MIN_STD = 1e-6


class RowMoments:
    """Count, mean and sum of squared deviations of rows, merged chunk by chunk (Chan et al.)."""

    def __init__(self, n_features: int) -> None:
        self.count = 0
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)

    def add(self, rows: np.ndarray) -> None:
        """Merge the moments of a (n_rows, n_features) chunk."""
        n = len(rows)
        if n == 0:
            return
        rows = np.asarray(rows, dtype=np.float64)
        mean = rows.mean(axis=0)
        m2 = ((rows - mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (as numpy's default)."""
        return np.sqrt(self.m2 / max(self.count, 1))


class CompressorScaler:
    """Standardises each compressor's signals with its own normal-period mean and std."""

    def __init__(self) -> None:
        self.mean_: dict[str, np.ndarray] = {}
        self.std_: dict[str, np.ndarray] = {}

    def fit(self, rows: np.ndarray, compressor_id: str) -> "CompressorScaler":
        """Fit one compressor from its (n_rows, n_features) normal rows."""
        if len(rows) < 2:
            raise ValueError(f"compressor {compressor_id}: need at least 2 rows to fit a scaler")
        self.mean_[compressor_id] = rows.mean(axis=0).astype(np.float32)
        self.std_[compressor_id] = np.maximum(rows.std(axis=0), _MIN_STD).astype(np.float32)
        return self

    def fit_moments(self, moments: RowMoments, compressor_id: str) -> "CompressorScaler":
        """Fit one compressor from moments accumulated over its normal rows."""
        if moments.count < 2:
            raise ValueError(f"compressor {compressor_id}: need at least 2 rows to fit a scaler")
        self.mean_[compressor_id] = moments.mean.astype(np.float32)
        self.std_[compressor_id] = np.maximum(moments.std, _MIN_STD).astype(np.float32)
        return self

    def params(self, compressor_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of one compressor, float32."""
        if compressor_id not in self.mean_:
            raise UnknownCompressorError(f"compressor {compressor_id!r} has no scaler in this model")
        return self.mean_[compressor_id], self.std_[compressor_id]

    def transform(self, values: np.ndarray, compressor_id: str) -> np.ndarray:
        """Scale rows or windows (last axis = features) of one compressor."""
        mean, std = self.params(compressor_id)
        return ((values - mean) / std).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            cid: {"mean": self.mean_[cid].tolist(), "std": self.std_[cid].tolist()} for cid in sorted(self.mean_)
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CompressorScaler":
        scaler = cls()
        for cid, params in data.items():
            scaler.mean_[cid] = np.asarray(params["mean"], dtype=np.float32)
            scaler.std_[cid] = np.asarray(params["std"], dtype=np.float32)
        return scaler
