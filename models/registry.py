"""The detectors the product knows, by the name saved in a model's metadata.

A detector's class is imported only when it is asked for. The LSTM one may start TensorFlow (for a
backfill's XLA graph), whose compilation cache models/compile_cache.py points at first (`uses_tensorflow`).
The names equal core.settings.DETECTORS, which validates `[detection] detector` without importing
models/; importing this module fails when the two differ.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.settings import DETECTORS, SCORE_METHODS

if TYPE_CHECKING:
    from models.detector import Detector


@dataclass(frozen=True)
class DetectorKind:
    """A registered detector: where its class lives and what the rest of the product needs to know before importing it."""

    name: str
    title: str  # as published benchmarks name the method (benchmarks/skab.py)
    module: str
    class_name: str
    uses_tensorflow: bool
    score_methods: tuple[str, ...]  # the `[detection] score` choices it takes (models/error_model.py) and has `with_score_method` for; () when it has one score

    def detector_class(self) -> type[Detector]:
        """The class (its `name` is this kind's name)."""
        return getattr(importlib.import_module(self.module), self.class_name)


REGISTRY: dict[str, DetectorKind] = {
    kind.name: kind
    for kind in (
        DetectorKind("lstm_ae", "LSTM-AE", "models.lstm_ae", "LSTMAutoencoderDetector", True, SCORE_METHODS),
        DetectorKind("iforest", "Isolation Forest", "models.iforest", "IsolationForestDetector", False, ()),
    )
}
if tuple(REGISTRY) != DETECTORS:
    raise ImportError(f"models/registry.py registers {tuple(REGISTRY)} but core.settings.DETECTORS is {DETECTORS}")


def detector_kind(name: str) -> DetectorKind:
    """The registered detector called `name`; ValueError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown detector {name!r} (choose from {', '.join(REGISTRY)})") from None
