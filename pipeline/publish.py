"""Train -> save -> promote: the one way a model version is made from the source table and published.

The command line, the demo, the test fixtures and the benchmarks all publish through here, so a
version they make is made as `train` makes it (same training data path, same metadata, same logs).
"""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from core.settings import Settings
from db.schema import Tables
from models.artifacts import ModelBundle, promote, save_bundle
from models.training import train_bundle
from pipeline.training_data import load_training_data

log = logging.getLogger(__name__)


def train_from_source(
    engine: sa.Engine, tables: Tables, settings: Settings, start: datetime | None, end: datetime | None, compressors: list[str] | None = None
) -> ModelBundle:
    """A new, unsaved version trained (and calibrated) on the normal rows of [start, end]."""
    sets, moments = load_training_data(engine, tables, settings, start, end, compressors)
    training_range = (start.isoformat() if start else None, end.isoformat() if end else None)
    return train_bundle(sets, settings, training_range, moments)


def publish(bundle: ModelBundle, model_dir: Path | str, promote_it: bool = True) -> Path:
    """Save `bundle` as a new version (a fresh name and creation time, whatever it was derived from)
    and, with `promote_it`, make it the promoted one."""
    bundle.version, bundle.created_at = "", ""
    path = save_bundle(bundle, model_dir)
    log.info("saved model version %s to %s", bundle.version, path)
    if promote_it:
        promote(model_dir, bundle.version)
        log.info("promoted model version %s", bundle.version)
    return path


def train_and_publish(
    engine: sa.Engine, tables: Tables, settings: Settings, start: datetime | None, end: datetime | None, promote_it: bool = True
) -> ModelBundle:
    """train_from_source, then publish to `settings.model_dir`; returns the saved bundle."""
    bundle = train_from_source(engine, tables, settings, start, end)
    publish(bundle, settings.model_dir, promote_it)
    return bundle
