"""The scoring API: `create_app(settings, bundle, api_key, ...)` returns the FastAPI app.

    POST /score         score windows of one compressor (see service/schemas.py)  key required
    GET  /health        model loaded, version, database reachable                  public
    GET  /metrics       Prometheus metrics of the service                          key required
    GET  /openapi.json  the API's schema                                           key required

Every request passes GuardMiddleware first: API key (401), body size (413), metrics.
"""
# No `from __future__ import annotations` here: FastAPI reads the endpoint's annotations, and the
# request model is built inside create_app.
import logging
import time

import numpy as np
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.logs import mask_secrets, printable
from core.settings import Settings
from db.engine import make_engine
from models.artifacts import ModelBundle
from pipeline.validate import value_limits
from service import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WINDOWS
from service.auth import key_matches, presented_key
from service.metrics import ServiceMetrics
from service.auth import API_KEY_HEADER
from service.schemas import ErrorBody, ScoreResponse, ValidationErrorBody, request_model, window_field_name
from service.scoring import prepare_for_requests, score

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health"})
ROUTES = frozenset({"/score", "/health", "/metrics", "/openapi.json"})
MAX_REPORTED_ERRORS = 20


async def _reply(scope, receive, send, status: int, detail: str, headers: dict | None = None) -> None:
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)


def _client(scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"


def _replay(body: bytes, receive):
    """A receive callable that hands the buffered body to the app, then defers to the client."""
    delivered = False

    async def replay():
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class GuardMiddleware:
    """API key check, request-size limit and request metrics around every HTTP request."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def _read_body(self, headers: dict[str, str], receive) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed the limit."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        status = 500

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            if self.api_key and path not in PUBLIC_PATHS and not key_matches(presented_key(headers), self.api_key):
                log.warning("refused %s %s from %s: missing or wrong API key", scope["method"], printable(path), _client(scope))
                await _reply(scope, receive, send_and_note, 401, "missing or wrong API key: send it in the X-API-Key header", {"WWW-Authenticate": "ApiKey"})
                return
            body = await self._read_body(headers, receive)
            if body is None:
                log.warning("refused %s %s from %s: body over %d bytes", scope["method"], printable(path), _client(scope), self.max_body_bytes)
                await _reply(scope, receive, send_and_note, 413, f"request body larger than {self.max_body_bytes} bytes", {"Connection": "close"})
                return
            await self.app(scope, _replay(body, receive), send_and_note)
        finally:
            route = path if path in ROUTES else "other"
            self.metrics.observe_request(scope["method"], route, status, time.perf_counter() - started)


def field_path(loc: tuple) -> str:
    """('body', 'windows', 0, 'filter_dp', 3) -> 'windows[0].filter_dp[3]'."""
    parts = loc[1:] if loc and loc[0] == "body" else loc
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


async def _validation_error(_request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"field": field_path(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
    detail = f"{errors[0]['field']}: {errors[0]['message']}" if errors else "invalid request"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return JSONResponse({"detail": detail, "errors": errors[:MAX_REPORTED_ERRORS]}, status_code=422)


def _invalid(loc: tuple, message: str) -> RequestValidationError:
    """A 422 found after parsing, answered like the parser's own (ValidationErrorBody)."""
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])
ERROR_RESPONSES = {
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    404: {"model": ErrorBody, "description": "compressor not in the model"},
    413: {"model": ErrorBody, "description": "too many windows or too large a body"},
    422: {"model": ValidationErrorBody, "description": "invalid request: the first bad field in `detail`"},
}


def _declare_api_key(app: FastAPI) -> None:
    """The OpenAPI schema states what GuardMiddleware enforces: the X-API-Key header on every route."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}}
            schema["security"] = [{"ApiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def database_reachable(engine: sa.Engine) -> bool:
    """SELECT 1 through the engine; a failure is logged (password masked), not raised."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.SQLAlchemyError as exc:
        log.warning("health: database unreachable: %s", mask_secrets(str(exc).splitlines()[0]))
        return False


def create_app(
    settings: Settings,
    bundle: ModelBundle,
    api_key: str | None,
    engine: sa.Engine | None = None,
    max_windows: int = DEFAULT_MAX_WINDOWS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    metrics: ServiceMetrics | None = None,
) -> FastAPI:
    """The app for one loaded bundle; api_key None serves without authentication."""
    metrics = metrics or ServiceMetrics()
    engine = engine or make_engine(settings.db_url)
    prepare_for_requests(bundle)
    metrics.model.info({"version": bundle.version, "detector": bundle.detector.name})
    limits = value_limits(settings.data, bundle.features)
    score_request = request_model(bundle.features, bundle.window, limits, bundle.compressors[0] if bundle.compressors else None)
    n_features = len(bundle.features)

    app = FastAPI(title="Compressor anomaly detection", version=bundle.version, docs_url=None, redoc_url=None)
    app.add_middleware(GuardMiddleware, api_key=api_key, max_body_bytes=max_body_bytes, metrics=metrics)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.state.metrics = metrics

    if api_key:
        _declare_api_key(app)

    @app.post("/score", response_model=ScoreResponse, responses=ERROR_RESPONSES)
    def score_windows(request: score_request) -> dict:
        """Score each window: score, threshold, anomaly flag, per-signal errors, top signals."""
        if len(request.windows) > max_windows:
            raise HTTPException(413, f"{len(request.windows)} windows in one request; at most {max_windows}")
        cid = request.compressor_id
        if cid not in bundle.thresholds:
            raise HTTPException(404, f"compressor {cid!r} is not in model {bundle.version}")
        values = np.array([[getattr(w, window_field_name(i)) for i in range(n_features)] for w in request.windows], dtype=np.float64)
        windows = values.astype(np.float32).transpose(0, 2, 1)
        started = time.perf_counter()
        results = score(bundle, cid, windows)
        unscorable = [i for i, r in enumerate(results) if not np.isfinite(r["score"]) or not np.isfinite(list(r["feature_errors"].values())).all()]
        if unscorable:
            raise _invalid(("body", "windows", unscorable[0]), f"the reconstruction error overflowed (no finite score); {len(unscorable)} such window(s)")
        anomalous = sum(r["is_anomaly"] for r in results)
        metrics.windows_scored.labels(cid).inc(len(results))
        metrics.anomalies.labels(cid).inc(anomalous)
        log.info("scored %d windows of %s in %.1f ms: %d anomalous", len(results), cid, (time.perf_counter() - started) * 1000, anomalous)
        return {"compressor_id": cid, "model_version": bundle.version, "threshold": bundle.thresholds[cid], "results": results}

    @app.get("/health", include_in_schema=False)
    def health(response: Response) -> dict:
        reachable = database_reachable(engine)
        if not reachable:
            response.status_code = 503
        return {
            "status": "ok" if reachable else "degraded",
            "model_loaded": True,
            "model_version": bundle.version,
            "detector": bundle.detector.name,
            "compressors": len(bundle.compressors),
            "database": "reachable" if reachable else "unreachable",
        }

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
