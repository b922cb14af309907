"""Training a detector and calibrating per-compressor thresholds on time-ordered normal windows."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from core.settings import Settings
from models.artifacts import ModelBundle
from models.scaler import RowMoments
from models.thresholds import alarm_budget_threshold, mean_std_threshold
from pipeline.windows import WindowSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimeSplit:
    """Earlier windows to fit on, later held-out windows for early stopping and calibration."""

    fit: WindowSet
    holdout: WindowSet


def time_split(ws: WindowSet, holdout_fraction: float) -> TimeSplit:
    """Split one compressor's windows by time; the holdout starts `window` windows after the fit part
    so that no row is shared across the boundary."""
    n = len(ws)
    cut = int(round(n * (1 - holdout_fraction)))
    overlap = ws.windows.shape[1] if n else 0
    return TimeSplit(ws.take(slice(0, cut)), ws.take(slice(min(n, cut + overlap), n)))


def make_detector(settings: Settings):
    """A fresh detector of the configured kind."""
    name = settings.detection.detector
    if name == "lstm_ae":
        from models.lstm_ae import LSTMAutoencoderDetector

        return LSTMAutoencoderDetector(settings.data.features, settings.data.window, settings.training, settings.detection.score)
    if name == "iforest":
        from models.iforest import IsolationForestDetector

        return IsolationForestDetector(settings.data.features, settings.data.window, settings.training)
    raise ValueError(f"unknown detector {name!r} (choose lstm_ae or iforest)")


def calibrate(detector, cid: str, split: TimeSplit, settings: Settings) -> float:
    """The threshold of one compressor under the configured rule."""
    det = settings.detection
    if det.threshold_rule == "mean_std":
        normal = np.concatenate([detector.score_samples(s.windows, cid) for s in (split.fit, split.holdout) if len(s)])
        return mean_std_threshold(normal, det.threshold_k)
    hours = len(split.holdout) * settings.data.sampling_interval_s / 3600.0
    scores = detector.score_samples(split.holdout.windows, cid)
    return alarm_budget_threshold(scores, hours, det.alarm_budget_per_hour, det.consecutive_trigger, split.holdout.breaks)


def _check_enough(sets: dict[str, WindowSet], settings: Settings) -> dict[str, TimeSplit]:
    splits = {}
    for cid, ws in sets.items():
        split = time_split(ws, settings.training.validation_fraction)
        if len(split.fit) < 2 or len(split.holdout) < 2:
            log.warning("compressor %s: only %d normal windows, skipped from training", cid, len(ws))
            continue
        splits[cid] = split
    if not splits:
        raise ValueError("no compressor has enough normal windows to train on; widen the training range")
    return splits


def train_bundle(
    sets: dict[str, WindowSet],
    settings: Settings,
    training_range: tuple[str | None, str | None],
    row_moments: dict[str, RowMoments] | None = None,
) -> ModelBundle:
    """Fit a detector on every compressor's normal windows and calibrate its thresholds.

    `row_moments` (from streamed training data) give the scaler statistics of a compressor whose
    windows are a sample; the others are scaled on their fit windows' rows.
    """
    started = time.perf_counter()
    splits = _check_enough(sets, settings)
    detector = make_detector(settings)
    detector.fit({c: s.fit for c, s in splits.items()}, {c: s.holdout for c, s in splits.items()}, row_moments or {})
    thresholds = {cid: calibrate(detector, cid, split, settings) for cid, split in splits.items()}
    log.info(
        "trained %s on %d compressors in %.1f s; thresholds (%s): %s",
        detector.name,
        len(splits),
        time.perf_counter() - started,
        settings.detection.threshold_rule,
        ", ".join(f"{c}={t:.4g}" for c, t in thresholds.items()),
    )
    return ModelBundle(
        detector=detector,
        thresholds=thresholds,
        threshold_rule=settings.detection.threshold_rule,
        consecutive_trigger=settings.detection.consecutive_trigger,
        training_range=training_range,
    )


def add_compressor_to_bundle(bundle: ModelBundle, cid: str, ws: WindowSet, settings: Settings) -> ModelBundle:
    """A new bundle in which `cid` has its own head and threshold; nothing else changes."""
    split = _check_enough({cid: ws}, settings)[cid]
    bundle.detector.add_compressor(cid, split.fit, split.holdout)
    thresholds = dict(bundle.thresholds)
    thresholds[cid] = calibrate(bundle.detector, cid, split, settings)
    log.info("added compressor %s with threshold %.4g", cid, thresholds[cid])
    return ModelBundle(
        detector=bundle.detector,
        thresholds=thresholds,
        threshold_rule=bundle.threshold_rule,
        consecutive_trigger=bundle.consecutive_trigger,
        training_range=bundle.training_range,
        extra={**bundle.extra, "parent_version": bundle.version},
    )
