"""Synthetic compressor-fleet telemetry with labelled faults."""
