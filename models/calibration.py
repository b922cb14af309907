"""Calibration on held-out normal windows: which windows, and the threshold they give.

The network never sees the windows its thresholds are calibrated on:

- `split_normal` cuts a compressor's normal windows into `_BLOCKS` time blocks and holds out
  evenly spread blocks (``calibration_fraction`` of them) for calibration, so that the held-out
  windows cover the same operating conditions as the training ones rather than only the last
  days. ``window`` windows at every boundary between roles are dropped, so no row is shared
  between a fitted and a held-out window. The held-out windows also stop training early.
- the detector fits its normal-error statistics (mean, covariance) on the held-out windows
  and returns out-of-fold scores (`Detector.fit_normal`, models/detector.py): the score of each
  window comes from statistics fitted without its own fold, so the threshold is not fitted on the
  scores it sees.
- `calibrate_compressor` turns those scores into the threshold of the configured rule and a
  `Calibration` record (windows, range, expected false-alarm rate) saved with the model.

`calibrate` (scheduler/cli.py) reuses the last two steps on a later normal period with the
network untouched: all windows of that period are held out.

`threshold_holds` is the check on live data that a threshold still means what its calibration
says: the share of recent windows above it against the rate it was calibrated for.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from core.errors import CalibrationError
from core.settings import Settings
from core.windows import WindowSet
from models.alarms import AlarmRule
from models.detector import Detector
from models.thresholds import alarm_budget_threshold, false_alarm_rate_threshold, mean_std_threshold, windows_needed

log = logging.getLogger(__name__)

_BLOCKS = 10
MIN_CALIBRATION_WINDOWS = 20
# A recent above-threshold rate this many times the calibrated one, and this many standard errors
# above it, says the threshold no longer holds (or the compressor is not running normally).
DRIFT_FACTOR = 3.0
DRIFT_Z = 3.0
MIN_INDEPENDENT_WINDOWS = 10  # fewer (windows / window length) say nothing either way


@dataclass(frozen=True)
class NormalSplit:
    """Windows to fit the network on, and held-out windows to calibrate on (both time-ordered)."""

    fit: WindowSet
    calibration: WindowSet


@dataclass(frozen=True)
class Calibration:
    """How one compressor's threshold was obtained; saved in the model metadata."""

    rule: str
    threshold: float
    windows: int
    start: str
    end: str
    target_rate: float | None
    held_out_rate: float  # fraction of the held-out windows above the threshold (out of fold)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        target = f", target {self.target_rate:.3%}" if self.target_rate is not None else ""
        return f"{self.windows} windows {self.start} .. {self.end}, {self.rule}{target}, held-out rate {self.held_out_rate:.3%}"


def split_normal(ws: WindowSet, fraction: float, window: int) -> NormalSplit:
    """Hold out evenly spread time blocks (about `fraction` of the windows) for calibration."""
    n = len(ws)
    blocks = np.array_split(np.arange(n), _BLOCKS)
    held = max(1, int(round(_BLOCKS * fraction)))
    chosen = {int(round((j + 0.5) * _BLOCKS / held - 0.5)) for j in range(held)}
    role = np.zeros(n, dtype=bool)
    for b in chosen:
        role[blocks[b]] = True
    change = np.flatnonzero(np.diff(role.astype(np.int8)) != 0)  # role[i] != role[i + 1]
    keep = np.ones(n, dtype=bool)
    for i in change:  # drop the fitted side's windows next to every boundary
        if role[i]:
            keep[i + 1 : i + 1 + window] = False
        else:
            keep[max(0, i + 1 - window) : i + 1] = False
    positions = np.arange(n)
    return NormalSplit(_fresh_start(ws.take(positions[keep & ~role])), _fresh_start(ws.take(positions[role])))


def _fresh_start(ws: WindowSet) -> WindowSet:
    """The same windows with a break at the first one (a series of its own: no alarm state before it)."""
    breaks = ws.breaks.copy()
    breaks[:1] = True
    return WindowSet(ws.view, ws.index, ws.end_times, breaks)


def folds_of(ws: WindowSet, folds: int) -> list[WindowSet]:
    """`folds` contiguous, time-ordered parts of the held-out windows (for out-of-fold scores)."""
    return [ws.take(part) for part in np.array_split(np.arange(len(ws)), folds) if len(part)]


def check_enough(cid: str, ws: WindowSet, settings: Settings) -> None:
    """Raise CalibrationError when `ws` is too small to calibrate on; warn when the rate is unsound."""
    needed = MIN_CALIBRATION_WINDOWS
    if settings.detection.threshold_rule == "false_alarm_rate":
        needed = max(needed, windows_needed(settings.detection.false_alarm_rate))
    if len(ws) >= needed:
        return
    minutes = (needed - len(ws)) * settings.data.sampling_interval_s / 60
    message = (
        f"compressor {cid}: {len(ws)} held-out normal windows; calibrating "
        f"{settings.detection.threshold_rule} soundly needs at least {needed} "
        f"({needed - len(ws)} more, about {minutes:.0f} minutes more normal data)"
    )
    if len(ws) < MIN_CALIBRATION_WINDOWS:
        raise CalibrationError(message)
    log.warning("%s; the threshold is the largest held-out score", message)


def _iso(t: np.datetime64) -> str:
    return str(np.datetime_as_string(t, unit="s"))


def calibrate_compressor(detector: Detector, cid: str, held_out: WindowSet, settings: Settings, rule: AlarmRule) -> Calibration:
    """Fit the detector's normal statistics of `cid` on `held_out` and derive its threshold."""
    check_enough(cid, held_out, settings)
    det = settings.detection
    scores = detector.fit_normal(cid, folds_of(held_out, settings.training.calibration_folds))
    target = None
    if det.threshold_rule == "false_alarm_rate":
        threshold = false_alarm_rate_threshold(scores, det.false_alarm_rate)
        target = det.false_alarm_rate
    elif det.threshold_rule == "mean_std":
        threshold = mean_std_threshold(scores, det.threshold_k)
    else:
        hours = len(held_out) * settings.data.sampling_interval_s / 3600.0
        threshold = alarm_budget_threshold(scores, hours, det.alarm_budget_per_hour, rule, held_out.breaks)
    return Calibration(
        rule=det.threshold_rule,
        threshold=float(threshold),
        windows=len(held_out),
        start=_iso(held_out.end_times[0]),
        end=_iso(held_out.end_times[-1]),
        target_rate=target,
        held_out_rate=float(np.mean(scores > threshold)),
    )


def calibrated_rate(calibration: dict) -> float | None:
    """The share of normal windows a compressor's threshold was calibrated to leave above it: the target
    rate, else (mean_std, alarm_budget) the held-out rate, at least one held-out window's worth."""
    if not calibration:
        return None
    if calibration.get("target_rate") is not None:
        return float(calibration["target_rate"])
    return max(float(calibration.get("held_out_rate") or 0.0), 1.0 / max(int(calibration.get("windows") or 1), 1))


def threshold_holds(windows: int, flagged: int, rate: float, window: int) -> bool:
    """False when `flagged` of `windows` recent windows above the threshold is far over `rate`: more than
    DRIFT_FACTOR times it and DRIFT_Z standard errors above it. Overlapping windows of `window` samples
    count as windows / window independent ones; under MIN_INDEPENDENT_WINDOWS of those it holds (no evidence),
    so a single excursion does not decide."""
    independent = windows / max(window, 1)
    if independent < MIN_INDEPENDENT_WINDOWS:
        return True
    observed = flagged / windows
    standard_error = float(np.sqrt(rate * (1.0 - rate) / independent))
    return not (observed > DRIFT_FACTOR * rate and observed - rate > DRIFT_Z * standard_error)
