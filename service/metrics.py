"""Prometheus metrics of the scoring service (own registry per app, served at GET /metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """Requests, latency, errors and scored windows of one app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("compressor_ad_api_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "compressor_ad_api_request_duration_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.errors = Counter("compressor_ad_api_errors", "Requests answered with a 4xx or 5xx status", ["route", "status"], registry=r)
        self.windows_scored = Counter("compressor_ad_api_windows_scored", "Windows scored through the API", ["compressor_id"], registry=r)
        self.anomalies = Counter("compressor_ad_api_anomalous_windows", "Scored windows above their threshold", ["compressor_id"], registry=r)
        self.model = Info("compressor_ad_api_model", "Model version the service loaded", registry=r)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
