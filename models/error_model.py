"""Turning per-feature reconstruction errors into one anomaly score.

`mahalanobis` (default): per compressor, a Gaussian model of the log per-feature errors of
normal windows; the score is the squared Mahalanobis distance divided by the number of
features (about 1 on normal data). Normal load transitions raise the errors of all
load-driven signals together, which the covariance expects; a fault breaks that pattern in a
few signals and stands out (the error-vector approach of Malhotra et al., 2016). The
covariance is Ledoit-Wolf shrunk, so a few hours of autocorrelated windows give a stable inverse.
`mse`: the plain mean squared reconstruction error of the window.

Contributions (which signals explain a window) are the standardised log errors per signal.
"""
from __future__ import annotations

import numpy as np

from core.errors import UnknownCompressorError
from core.settings import SCORE_METHODS
_EPS = 1e-6


def _log(errors: np.ndarray) -> np.ndarray:
    return np.log(np.asarray(errors, dtype=np.float64) + _EPS)


class ErrorModel:
    """Per-compressor mean and shrunk precision of log per-feature errors."""

    def __init__(self, method: str = "mahalanobis") -> None:
        if method not in SCORE_METHODS:
            raise ValueError(f"unknown score method {method!r} (choose from {SCORE_METHODS})")
        self.method = method
        self.mean_: dict[str, np.ndarray] = {}
        self.std_: dict[str, np.ndarray] = {}
        self.precision_: dict[str, np.ndarray] = {}

    def fit(self, errors: np.ndarray, cid: str) -> "ErrorModel":
        """Fit one compressor on the (n, features) errors of its normal windows."""
        from sklearn.covariance import LedoitWolf  # here, not at the top: a process that only scores never imports scikit-learn

        x = _log(errors)
        if len(x) < 2:
            raise ValueError(f"compressor {cid}: need at least 2 normal windows to model errors")
        self.mean_[cid] = x.mean(axis=0)
        self.std_[cid] = np.maximum(x.std(axis=0), 1e-6)
        self.precision_[cid] = LedoitWolf().fit(x).precision_
        return self

    def _check(self, cid: str) -> None:
        if cid not in self.mean_:
            raise UnknownCompressorError(f"compressor {cid!r} has no error model in this detector")

    def score(self, errors: np.ndarray, cid: str) -> np.ndarray:
        """Anomaly score per window (higher is more anomalous)."""
        if self.method == "mse":
            return np.asarray(errors, dtype=np.float64).mean(axis=1)
        self._check(cid)
        centred = _log(errors) - self.mean_[cid]
        return np.einsum("nf,fg,ng->n", centred, self.precision_[cid], centred) / centred.shape[1]

    def contributions(self, errors: np.ndarray, cid: str) -> np.ndarray:
        """How unusual each signal's error is: standardised log error (mse method: the raw error)."""
        if self.method == "mse":
            return np.asarray(errors, dtype=np.float64)
        self._check(cid)
        return (_log(errors) - self.mean_[cid]) / self.std_[cid]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "compressors": {
                cid: {"mean": self.mean_[cid].tolist(), "std": self.std_[cid].tolist(), "precision": self.precision_[cid].tolist()}
                for cid in sorted(self.mean_)
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ErrorModel":
        model = cls(data["method"])
        for cid, params in data["compressors"].items():
            model.mean_[cid] = np.asarray(params["mean"], dtype=np.float64)
            model.std_[cid] = np.asarray(params["std"], dtype=np.float64)
            model.precision_[cid] = np.asarray(params["precision"], dtype=np.float64)
        return model
