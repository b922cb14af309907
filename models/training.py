"""Training a detector on normal windows and calibrating it on held-out ones (models/calibration.py)."""
from __future__ import annotations

import logging
import time

from core.errors import CalibrationError
from core.settings import Settings
from core.windows import WindowSet
from models.alarms import rule_from_settings
from models.artifacts import ModelBundle
from models.calibration import NormalSplit, calibrate_compressor, split_normal
from models.detector import Detector
from models.registry import detector_kind
from models.scaler import RowMoments

log = logging.getLogger(__name__)


def make_detector(settings: Settings) -> Detector:
    """A fresh detector of the configured kind (models/registry.py); ValueError for an unknown one."""
    kind = detector_kind(settings.detection.detector)
    options = {"score_method": settings.detection.score} if kind.score_methods else {}
    return kind.detector_class()(settings.data.features, settings.data.window, settings.training, **options)


def _splits(sets: dict[str, WindowSet], settings: Settings) -> dict[str, NormalSplit]:
    """Each compressor's fit / held-out split; compressors with too few windows are left out with a warning."""
    splits = {}
    for cid, ws in sets.items():
        split = split_normal(ws, settings.training.calibration_fraction, settings.data.window)
        if len(split.fit) < 2 or len(split.calibration) < 2:
            log.warning("compressor %s: only %d normal windows, skipped from training", cid, len(ws))
            continue
        splits[cid] = split
    if not splits:
        raise CalibrationError("no compressor has enough normal windows to train on; widen the training range")
    return splits


def _log_calibration(bundle: ModelBundle, compressors: list[str]) -> None:
    for cid in compressors:
        log.info("compressor %s: threshold %.4g from %s", cid, bundle.thresholds[cid], bundle.calibration[cid]["rule"])


def train_bundle(
    sets: dict[str, WindowSet],
    settings: Settings,
    training_range: tuple[str | None, str | None],
    row_moments: dict[str, RowMoments] | None = None,
) -> ModelBundle:
    """Fit a detector on every compressor's normal windows and calibrate it on held-out ones.

    `row_moments` (from streamed training data) give the scaler statistics of a compressor whose
    windows are a sample; the others are scaled on their fit windows' rows.
    """
    started = time.perf_counter()
    splits = _splits(sets, settings)
    detector = make_detector(settings)
    detector.fit({c: s.fit for c, s in splits.items()}, {c: s.calibration for c, s in splits.items()}, row_moments or {})
    rule = rule_from_settings(settings.detection)
    calibration = {cid: calibrate_compressor(detector, cid, split.calibration, settings, rule) for cid, split in splits.items()}
    bundle = ModelBundle(
        detector=detector,
        thresholds={cid: c.threshold for cid, c in calibration.items()},
        threshold_rule=settings.detection.threshold_rule,
        alarm=rule,
        training_range=training_range,
        calibration={cid: c.to_dict() for cid, c in calibration.items()},
    )
    log.info(
        "trained %s on %d compressors in %.1f s; %s thresholds, alarm rule %s",
        detector.name, len(splits), time.perf_counter() - started, settings.detection.threshold_rule, rule.describe(),
    )
    _log_calibration(bundle, list(splits))
    return bundle


def add_compressor_to_bundle(bundle: ModelBundle, cid: str, ws: WindowSet, settings: Settings) -> ModelBundle:
    """A new bundle in which `cid` has its own head and threshold; nothing else changes."""
    split = _splits({cid: ws}, settings)[cid]
    bundle.detector.add_compressor(cid, split.fit, split.calibration)
    added = calibrate_compressor(bundle.detector, cid, split.calibration, settings, bundle.alarm)
    grown = ModelBundle(
        detector=bundle.detector,
        thresholds={**bundle.thresholds, cid: added.threshold},
        threshold_rule=bundle.threshold_rule,
        alarm=bundle.alarm,
        training_range=bundle.training_range,
        extra={**bundle.extra, "parent_version": bundle.version},
        calibration={**bundle.calibration, cid: added.to_dict()},
    )
    _log_calibration(grown, [cid])
    return grown


def recalibrate_bundle(
    bundle: ModelBundle, sets: dict[str, WindowSet], settings: Settings, period: tuple[str, str]
) -> ModelBundle:
    """A new bundle whose compressors in `sets` are calibrated on all of their (normal) windows.

    The network weights, the alarm rule and every other compressor's statistics and threshold are
    kept; the threshold rule is the configured one.
    """
    unknown = sorted(set(sets) - set(bundle.thresholds))
    if unknown:
        raise CalibrationError(f"compressor(s) {', '.join(unknown)} are not in model {bundle.version}; add them with `train --add-compressor`")
    thresholds, calibration = dict(bundle.thresholds), dict(bundle.calibration)
    for cid, ws in sets.items():
        result = calibrate_compressor(bundle.detector, cid, ws, settings, bundle.alarm)
        thresholds[cid], calibration[cid] = result.threshold, result.to_dict()
    recalibrated = ModelBundle(
        detector=bundle.detector,
        thresholds=thresholds,
        threshold_rule=settings.detection.threshold_rule,
        alarm=bundle.alarm,
        training_range=bundle.training_range,
        extra={**bundle.extra, "parent_version": bundle.version, "calibration_period": list(period)},
        calibration=calibration,
    )
    _log_calibration(recalibrated, list(sets))
    return recalibrated
