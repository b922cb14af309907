"""Scoring the windows of one request with the loaded bundle (the batch pipeline's functions)."""
from __future__ import annotations

import numpy as np

from models.artifacts import ModelBundle
from pipeline.scoring import top_features

REQUEST_INFERENCE_BATCH = 64


def prepare_for_requests(bundle: ModelBundle) -> None:
    """Size inference batches for requests and compile them once, before the first request.

    The batch pipeline pads LSTM inference to large fixed batches; a request holds a few windows,
    so the service scores in batches of REQUEST_INFERENCE_BATCH instead (one compiled shape, any request size).
    """
    bundle.detector.set_batch_size(REQUEST_INFERENCE_BATCH)
    if bundle.compressors:
        score(bundle, bundle.compressors[0], np.zeros((1, bundle.window, len(bundle.features)), np.float32))


def score(bundle: ModelBundle, cid: str, windows: np.ndarray) -> list[dict]:
    """(n, window, features) raw windows of one compressor -> one result dict per window.

    The windows are taken as consecutive: the model's alarm rule runs over them from a fresh state
    (`in_alert`, `alert_opens`), as it would at the start of a batch.
    """
    threshold = bundle.threshold_for(cid)
    scores, errors, contributions = bundle.detector.anomaly_score_details(windows, cid)
    names = top_features(np.asarray(contributions), bundle.features)
    trace = bundle.alarm.apply(scores, threshold)
    return [
        {
            "score": float(scores[i]),
            "threshold": threshold,
            "is_anomaly": bool(trace.is_anomaly[i]),
            "in_alert": bool(trace.in_episode[i]),
            "alert_opens": bool(trace.triggered[i]),
            "feature_errors": dict(zip(bundle.features, map(float, errors[i]))),
            "top_features": names[i].split(", "),
            "model_version": bundle.version,
        }
        for i in range(len(windows))
    ]
