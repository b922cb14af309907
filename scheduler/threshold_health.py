"""After a live run: does each scored compressor's threshold still hold on its recent windows?

A threshold is calibrated to leave a known share of normal windows above it (models/calibration.py).
When the share among the windows of the last `[detection] threshold_check_hours` (running, outside
maintenance: the windows that can raise an alert) is far over that
(models.calibration.threshold_holds), either the compressor is not running normally (its alerts
say so too) or normal operation has moved away from the calibration period (ageing, new
set-points, a season), and the alerts it raises are not to be trusted until `calibrate` has been
run on a normal period. One WARNING per such compressor and run; `status` shows the same figures and
the run's metrics (scheduler/metrics.py) carry them as gauges.
Read-only: a database error (or an unreadable stored value) skips the check, never the run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from core.settings import Settings
from db.results import recent_flagged
from db.schema import Tables
from models.calibration import calibrated_rate, threshold_holds
from pipeline.suppression import RUNNING

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThresholdHealth:
    """One compressor's recent windows against the rate its threshold was calibrated for."""

    compressor_id: str
    model_version: str
    hours: float
    windows: int
    flagged: int
    calibrated_rate: float
    holds: bool

    @property
    def rate(self) -> float:
        return self.flagged / self.windows if self.windows else 0.0

    def cell(self) -> str:
        """'31.2% (2.0%)': recent share above the threshold, and the calibrated one ('!' when it no longer holds)."""
        if not self.windows:
            return "-"
        return f"{self.rate:.1%} ({self.calibrated_rate:.1%}){'' if self.holds else ' !'}"

    def warning(self) -> str:
        return (
            f"compressor {self.compressor_id}: {self.flagged} of its {self.windows} windows of the last {self.hours:g} h "
            f"({self.rate:.1%}) are above the threshold of model {self.model_version}, calibrated for {self.calibrated_rate:.1%}: "
            "unless it is running abnormally, the threshold no longer holds for it (its alerts will be mostly false); "
            "run `run_scheduler.py calibrate --start ISO --end ISO --compressor "
            f"{self.compressor_id}` on a period of normal operation"
        )


def assess(
    engine: sa.Engine, tables: Tables, settings: Settings, model_version: str, calibration: dict[str, dict], compressors: list[str]
) -> list[ThresholdHealth]:
    """The check for `compressors` under `model_version` (those without a calibration record: skipped)."""
    hours = settings.detection.threshold_check_hours
    found = []
    if hours <= 0:
        return found
    with engine.connect() as conn:
        for cid in compressors:
            rate = calibrated_rate(calibration.get(cid, {}))
            if rate is None:
                continue
            windows, flagged = recent_flagged(conn, tables, cid, model_version, hours, RUNNING)
            found.append(ThresholdHealth(cid, model_version, hours, windows, flagged, rate, threshold_holds(windows, flagged, rate, settings.data.window)))
    return found


def check_thresholds(
    engine: sa.Engine, tables: Tables, settings: Settings, model_version: str, calibration: dict[str, dict], compressors: list[str]
) -> list[ThresholdHealth]:
    """assess, with one WARNING per compressor whose threshold no longer holds; returns every assessment
    (none when the database cannot be read: the check is skipped with a WARNING, the run goes on)."""
    try:
        found = assess(engine, tables, settings, model_version, calibration, compressors)
    except (sa.exc.SQLAlchemyError, ValueError, TypeError) as exc:  # a database gone, a stored value that is no timestamp
        log.warning("threshold check skipped: %s", (str(exc).splitlines() or [type(exc).__name__])[0])
        return []
    for health in (h for h in found if not h.holds):
        log.warning(
            "%s", health.warning(),
            extra={"compressor": health.compressor_id, "recent_windows": health.windows, "recent_flagged": health.flagged, "calibrated_rate": health.calibrated_rate},
        )
    return found
