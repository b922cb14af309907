"""Offline evaluation of detectors against labelled data: score, point and event metrics."""
