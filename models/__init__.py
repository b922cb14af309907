"""Detectors, training, thresholds and model artifacts."""
