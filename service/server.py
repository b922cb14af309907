"""`run_scheduler.py serve`: check the key and TLS files, load the model once, run uvicorn."""
from __future__ import annotations

import logging
import signal
from pathlib import Path

from core.errors import PipelineError
from core.settings import Settings
from service.auth import API_KEY_ENV, API_KEY_FILE_ENV, load_api_key

log = logging.getLogger(__name__)
MAX_REQUEST_HEAD_BYTES = 16 * 1024


def _check_tls(certfile: str | None, keyfile: str | None) -> None:
    if bool(certfile) != bool(keyfile):
        raise PipelineError("TLS needs both --ssl-certfile and --ssl-keyfile")
    for path in (certfile, keyfile):
        if path and not Path(path).is_file():
            raise PipelineError(f"TLS file not found: {path}")


def serve(
    settings: Settings,
    host: str,
    port: int,
    insecure_no_auth: bool = False,
    max_windows: int | None = None,
    max_body_bytes: int | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; refuse to start without an API key unless insecure_no_auth."""
    api_key = None if insecure_no_auth else load_api_key()
    if api_key is None and not insecure_no_auth:
        raise PipelineError(f"no API key: set {API_KEY_ENV} or {API_KEY_FILE_ENV} (or pass --insecure-no-auth for local tests)")
    if (max_windows is not None and max_windows < 1) or (max_body_bytes is not None and max_body_bytes < 1):
        raise PipelineError("--max-windows and --max-body-bytes must be at least 1")
    _check_tls(ssl_certfile, ssl_keyfile)

    import uvicorn

    from db.engine import make_engine, safe_url
    from models.artifacts import load_for_settings
    from service.app import create_app

    bundle = load_for_settings(settings)
    limits = {k: v for k, v in (("max_windows", max_windows), ("max_body_bytes", max_body_bytes)) if v is not None}
    engine = make_engine(settings.db_url)
    app = create_app(settings, bundle, api_key, engine=engine, **limits)
    scheme = "https" if ssl_certfile else "http"
    if insecure_no_auth:
        log.warning("serving WITHOUT authentication (--insecure-no-auth): every client can score and read metrics")
    log.info(
        "serving model %s (%s, %d compressors) on %s://%s:%d, database %s",
        bundle.version, bundle.detector.name, len(bundle.compressors), scheme, host, port, safe_url(engine.url),
    )
    # h11 refuses a request line + headers over MAX_REQUEST_HEAD_BYTES with 400 before the app sees it.
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, server_header=False, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
        http="h11", h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the previous
    # handler: make that one a no-op so that a requested stop ends with exit code 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.Server(config).run()
    log.info("scoring service stopped")
    return 0
