"""The contract every detector meets, in the manner of scikit-learn, PyOD and alibi-detect.

A detector holds one model per compressor over the same `features` and `window`; it scores raw
(n, window, features) windows of one compressor at a time against that compressor's model.

Invariants every implementation keeps:
- scores are anomaly scores: higher is more anomalous (as alibi-detect's `score` and PyOD's
  `decision_function`; scikit-learn's `score_samples` has the opposite sign);
- `anomaly_score(w, c)` equals `anomaly_score_details(w, c).score`;
- scoring is deterministic: the same windows give the same scores, and `load(save(d))` scores as `d`;
- `add_compressor` leaves every other compressor's scores unchanged;
- a compressor the detector has no model of raises UnknownCompressorError (`CompressorHeads.head_of`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, Self, runtime_checkable

import numpy as np

from core.errors import UnknownCompressorError

if TYPE_CHECKING:
    from core.settings import TrainingSettings
    from models.scaler import RowMoments
    from core.windows import WindowSet


class ScoreDetails(NamedTuple):
    """Scores of n windows with their explanation; unpacks as (score, feature_errors, contributions)."""

    score: np.ndarray  # (n,), higher is more anomalous
    feature_errors: np.ndarray  # (n, features), >= 0: how far each signal's window is from normal
    contributions: np.ndarray  # (n, features): how much each signal explains the score (ranked by pipeline/scoring.py)


@runtime_checkable
class Detector(Protocol):
    """What training, calibration, scoring and model artifacts use of a detector."""

    name: str  # its key in models/registry.py, saved in the model metadata
    features: tuple[str, ...]
    window: int
    compressors: list[str]  # in the order they were fitted and added

    def fit(
        self, train: dict[str, WindowSet], validation: dict[str, WindowSet], row_moments: dict[str, RowMoments] | None = None
    ) -> Self:
        """Fit one model per compressor of `train` on its normal windows; `compressors` becomes those of `train`.

        `validation` holds each compressor's held-out windows; `row_moments` a compressor's scaler
        statistics over all its rows. A detector that needs neither ignores them.
        """
        ...

    def fit_normal(self, cid: str, folds: list[WindowSet]) -> np.ndarray:
        """Fit `cid`'s statistics of normal scores on held-out windows; return their out-of-fold scores, in order."""
        ...

    def add_compressor(self, cid: str, train: WindowSet, validation: WindowSet) -> Self:
        """Fit a model for a new compressor; the others' scores stay the same. ValueError if `cid` is known."""
        ...

    def feature_errors(self, windows: np.ndarray, cid: str) -> np.ndarray:
        """(n, window, features) raw windows -> (n, features) per-signal errors."""
        ...

    def anomaly_score(self, windows: np.ndarray, cid: str) -> np.ndarray:
        """(n, window, features) raw windows -> (n,) scores, higher is more anomalous."""
        ...

    def anomaly_score_details(self, windows: np.ndarray, cid: str) -> ScoreDetails:
        """Scores, per-feature errors and contributions of the windows, in one pass."""
        ...

    def set_batch_size(self, size: int) -> None:
        """Score in batches of `size` windows from now on; a speed and memory knob: scores agree to float32 rounding."""
        ...

    def for_many_runs(self) -> None:
        """This process will score many batches (a daemon): pay any one-off start-up once, for faster calls from then on; scores agree to float32 rounding."""
        ...

    def save(self, directory: Path) -> list[str]:
        """Write the detector's files into `directory`; return their names (hashed by models/artifacts.py)."""
        ...

    @classmethod
    def load(cls, directory: Path, training: TrainingSettings | None = None) -> Self:
        """The detector `save` wrote to `directory`; ModelArtifactError when it is unreadable. Never unpickles."""
        ...


class CompressorHeads:
    """Base of a detector with one model per compressor (a decoder head, a forest), kept in `compressors` order."""

    compressors: list[str]

    def head_of(self, cid: str) -> int:
        """Position of `cid`'s model; UnknownCompressorError when the detector has none."""
        try:
            return self.compressors.index(cid)
        except ValueError:
            raise UnknownCompressorError(
                f"compressor {cid!r} is not in the model (known: {', '.join(self.compressors)}); "
                "add it with `train --add-compressor`"
            ) from None
