"""Isolation-forest baseline detector: one forest per compressor on rolling window statistics.

Each forest is trained with scikit-learn (imported only to train), then flattened into plain node arrays (`IsolationTrees`)
and scored with numpy, so a saved model is JSON plus an `.npz` read with `allow_pickle=False`:
nothing loaded at run time is a pickle.
"""
from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import ModelArtifactError
from core.settings import TrainingSettings
from core.windows import WindowSet
from models.detector import CompressorHeads, ScoreDetails

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest

log = logging.getLogger(__name__)

STATE_FILE = "detector.json"
TREES_FILE = "forests.npz"
STATS = ("mean", "std", "min", "max", "last", "diff")
N_ESTIMATORS = 150
CHUNK = 4096
_MIN_STD = 1e-6


def rolling_features(windows: np.ndarray) -> np.ndarray:
    """(n, window, F) raw windows -> (n, F, len(STATS)) statistics of every signal over its window.

    The statistics are mean, std, min, max, last value and first difference (last - previous).
    """
    w = np.asarray(windows, dtype=np.float64)
    last = w[:, -1, :]
    return np.stack([w.mean(1), w.std(1), w.min(1), w.max(1), last, last - w[:, -2, :]], axis=2)


def average_path_length(n_samples: np.ndarray | int) -> np.ndarray:
    """c(n): average path length of an unsuccessful binary-search-tree search, as scikit-learn defines it."""
    n = np.asarray(n_samples, dtype=np.float64)
    safe = np.maximum(n, 3.0)
    c = 2.0 * (np.log(safe - 1.0) + np.euler_gamma) - 2.0 * (safe - 1.0) / safe
    return np.where(n <= 1, 0.0, np.where(n == 2, 1.0, c))


@dataclass(frozen=True)
class IsolationTrees:
    """A fitted isolation forest as flat node arrays (all trees concatenated), scored with numpy.

    left, right:  child of each node; a leaf points to itself, so walking past it is harmless
    feature, threshold: split of each node (go left when x[feature] <= threshold)
    path_length:  path length credited at a leaf: its depth (root = 0) + c(n_node_samples)
    roots:        first node of every tree
    max_samples:  samples each tree was grown on (normalises the mean path length)
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    path_length: np.ndarray
    roots: np.ndarray
    max_samples: int

    ARRAYS = ("left", "right", "feature", "threshold", "path_length", "roots")

    @classmethod
    def from_sklearn(cls, forest: IsolationForest) -> "IsolationTrees":
        """Flatten a fitted IsolationForest grown with max_features=1.0 (every tree sees every column)."""
        if forest.max_features != 1.0:
            raise ValueError("only forests with max_features=1.0 can be flattened")
        left, right, feature, threshold, path_length, roots = [], [], [], [], [], []
        offset = 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            leaf = tree.children_left == -1
            nodes = np.arange(tree.node_count) + offset
            left.append(np.where(leaf, nodes, tree.children_left + offset))
            right.append(np.where(leaf, nodes, tree.children_right + offset))
            feature.append(np.where(leaf, 0, tree.feature))
            threshold.append(np.where(leaf, 0.0, tree.threshold))
            path_length.append(tree.compute_node_depths() - 1.0 + average_path_length(tree.n_node_samples))
            roots.append(offset)
            offset += tree.node_count
        columns = map(np.concatenate, (left, right, feature, threshold, path_length))
        return cls(*columns, roots=np.array(roots), max_samples=int(forest.max_samples_))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], max_samples: int, n_features: int) -> "IsolationTrees":
        """Rebuild from stored arrays; raise ValueError when they are inconsistent."""
        floats = ("threshold", "path_length")
        columns = {k: np.asarray(arrays[k], dtype=np.float64 if k in floats else np.int64) for k in cls.ARRAYS}
        trees = cls(**columns, max_samples=int(max_samples))
        n = len(trees.left)
        if any(np.ndim(a) != 1 for a in trees.arrays().values()) or any(
            len(a) != n for a in (trees.right, trees.feature, trees.threshold, trees.path_length)
        ):
            raise ValueError("tree arrays have inconsistent shapes")
        for name, bound in (("left", n), ("right", n), ("roots", n), ("feature", n_features)):
            values = getattr(trees, name)
            if len(values) and (values.min() < 0 or values.max() >= bound):
                raise ValueError(f"tree array {name!r} holds out-of-range indices")
        if trees.max_samples < 2 or not len(trees.roots):
            raise ValueError("a forest needs at least one tree grown on at least 2 samples")
        return trees

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.ARRAYS}

    def score(self, x: np.ndarray) -> np.ndarray:
        """Anomaly score 2^(-E[h(x)] / c(max_samples)) in (0, 1]; equals -IsolationForest.score_samples(x)."""
        x = np.asarray(x, dtype=np.float32)  # scikit-learn compares float32 inputs with float64 thresholds
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots)))
        for _ in range(int(np.ceil(np.log2(self.max_samples)))):  # the depth limit scikit-learn grows to
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        depth = self.path_length[node].sum(axis=1)
        return 2.0 ** (-depth / (len(self.roots) * average_path_length(self.max_samples)))


@dataclass(frozen=True)
class _Unit:
    """One compressor's model: standardisation of its rolling features and its forest."""

    mean: np.ndarray
    scale: np.ndarray
    trees: IsolationTrees


class IsolationForestDetector(CompressorHeads):
    """One isolation forest per compressor on standardised rolling statistics of each window.

    anomaly_score: the isolation-forest anomaly score, in (0, 1], higher is more anomalous
                   (normal windows score around 0.4-0.5, clear outliers approach 1).
    feature_errors: per signal, the mean over its rolling statistics of the squared standardised
                   deviation from the training mean: how far that signal's window looks from normal.
    """

    name = "iforest"

    def __init__(self, features: tuple[str, ...], window: int, training: TrainingSettings | None = None) -> None:
        self.features = tuple(features)
        self.window = int(window)
        self.training = training or TrainingSettings()
        self.compressors: list[str] = []
        self._units: list[_Unit] = []
        self._batch_size = CHUNK

    # ----------------------------------------------------------------- training
    def _fit_unit(self, cid: str, ws: WindowSet) -> None:
        sub = ws.take(slice(None, None, max(1, self.training.window_stride)))
        if len(sub) < 2:
            raise ValueError(f"compressor {cid}: need at least 2 windows to fit an isolation forest")
        stats = np.concatenate([rolling_features(w) for _, w in sub.chunks(CHUNK)]).reshape(len(sub), -1)
        mean, scale = stats.mean(axis=0), np.maximum(stats.std(axis=0), _MIN_STD)
        from sklearn.ensemble import IsolationForest  # here, not at the top: a process that only scores never imports scikit-learn

        forest = IsolationForest(n_estimators=N_ESTIMATORS, random_state=self.training.seed)
        forest.fit(((stats - mean) / scale).astype(np.float32))
        self._units.append(_Unit(mean, scale, IsolationTrees.from_sklearn(forest)))
        self.compressors.append(cid)
        log.info("isolation forest for %s: %d trees on %d windows", cid, N_ESTIMATORS, len(sub))

    def fit(self, train: dict[str, WindowSet], validation: dict[str, WindowSet], row_moments: dict | None = None) -> "IsolationForestDetector":
        """Fit one forest per compressor on its normal training windows (every `window_stride`-th).

        `validation` and `row_moments` are accepted for parity with the LSTM detector; a forest needs
        no early stopping and standardises its own window statistics.
        """
        self.compressors, self._units = [], []
        for cid in sorted(train):
            self._fit_unit(cid, train[cid])
        return self

    def add_compressor(self, cid: str, train: WindowSet, validation: WindowSet) -> "IsolationForestDetector":
        """Fit a forest for a new compressor; the other compressors' forests are untouched."""
        if cid in self.compressors:
            raise ValueError(f"compressor {cid!r} already has a forest in this model")
        self._fit_unit(cid, train)
        return self

    def fit_normal(self, cid: str, folds: list[WindowSet]) -> np.ndarray:
        """Scores of held-out normal windows, in order (a forest keeps no statistics fitted on them)."""
        return np.concatenate([self.anomaly_score(w, cid) for f in folds for _, w in f.chunks(CHUNK)])

    # ---------------------------------------------------------------- inference
    def _standardised(self, windows: np.ndarray, unit: _Unit) -> np.ndarray:
        """(n, window, F) raw windows -> (n, F * len(STATS)) standardised rolling features."""
        if windows.ndim != 3 or windows.shape[1:] != (self.window, len(self.features)):
            raise ValueError(f"expected windows of shape (n, {self.window}, {len(self.features)}), got {windows.shape}")
        return (rolling_features(windows).reshape(len(windows), -1) - unit.mean) / unit.scale

    def set_batch_size(self, size: int) -> None:
        """Compute the rolling statistics of `size` windows at a time from now on (scores do not depend on it)."""
        if size < 1:
            raise ValueError(f"batch size must be at least 1, got {size}")
        self._batch_size = int(size)

    def for_many_runs(self) -> None:
        """Nothing to do: the forests have no start-up to pay."""

    def feature_errors(self, windows: np.ndarray, cid: str) -> np.ndarray:
        """(n, window, F) raw windows of one compressor -> (n, F) mean squared standardised deviations."""
        unit, batch = self._units[self.head_of(cid)], self._batch_size
        out = np.zeros((len(windows), len(self.features)), np.float32)
        for start in range(0, len(windows), batch):
            z = self._standardised(windows[start : start + batch], unit)
            out[start : start + batch] = (z.reshape(len(z), len(self.features), len(STATS)) ** 2).mean(axis=2)
        return out

    def anomaly_score(self, windows: np.ndarray, cid: str) -> np.ndarray:
        """Anomaly score per window (higher is more anomalous): the isolation-forest score in (0, 1]."""
        unit, batch = self._units[self.head_of(cid)], self._batch_size
        out = np.zeros(len(windows), np.float64)
        for start in range(0, len(windows), batch):
            out[start : start + batch] = unit.trees.score(self._standardised(windows[start : start + batch], unit))
        return out

    def anomaly_score_details(self, windows: np.ndarray, cid: str) -> ScoreDetails:
        """Scores, per-feature deviations and contributions (the deviations themselves)."""
        errors = self.feature_errors(windows, cid)
        return ScoreDetails(self.anomaly_score(windows, cid), errors, errors)

    # -------------------------------------------------------------- persistence
    def save(self, directory: Path) -> list[str]:
        """Write a JSON state file and the forests' node arrays (.npz, no objects); return their names."""
        arrays = {}
        for i, unit in enumerate(self._units):
            arrays.update({f"c{i}_{k}": v for k, v in unit.trees.arrays().items()})
            arrays[f"c{i}_mean"], arrays[f"c{i}_scale"] = unit.mean, unit.scale
        np.savez_compressed(directory / TREES_FILE, **arrays)
        state = {
            "detector": self.name,
            "features": list(self.features),
            "window": self.window,
            "stats": list(STATS),
            "compressors": self.compressors,
            "max_samples": [u.trees.max_samples for u in self._units],
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        return [TREES_FILE, STATE_FILE]

    @classmethod
    def load(cls, directory: Path, training: TrainingSettings | None = None) -> "IsolationForestDetector":
        """Load JSON + .npz (allow_pickle=False); raise ModelArtifactError if unreadable or inconsistent."""
        try:
            state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
            if state["detector"] != cls.name or state["stats"] != list(STATS):
                raise ValueError("the state file does not describe this isolation-forest detector")
            detector = cls(tuple(state["features"]), state["window"], training)
            n_columns = len(detector.features) * len(STATS)
            with np.load(directory / TREES_FILE, allow_pickle=False) as npz:
                for i, (cid, max_samples) in enumerate(zip(state["compressors"], state["max_samples"], strict=True)):
                    trees = IsolationTrees.from_arrays(
                        {k: npz[f"c{i}_{k}"] for k in IsolationTrees.ARRAYS}, max_samples, n_columns
                    )
                    mean, scale = npz[f"c{i}_mean"].astype(np.float64), npz[f"c{i}_scale"].astype(np.float64)
                    if mean.shape != (n_columns,) or scale.shape != (n_columns,):
                        raise ValueError(f"standardisation of {cid!r} does not match the feature list")
                    detector._units.append(_Unit(mean, scale, trees))
                    detector.compressors.append(cid)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelArtifactError(f"cannot load the isolation forest from {directory}: {exc}") from exc
        return detector
