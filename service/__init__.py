"""HTTP scoring service: `run_scheduler.py serve` (FastAPI under uvicorn), see service/app.py."""

DEFAULT_PORT = 8000
DEFAULT_MAX_WINDOWS = 512
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
