"""Operator-facing logging: one line per step, plain text or JSON, secrets masked."""
from __future__ import annotations

import json
import logging
import logging.handlers
import re
from pathlib import Path

_URL_PASSWORD = re.compile(r"(?P<head>(?:[a-zA-Z0-9+_.-]+://)?[^:/@\s]*:)(?!//)(?P<password>[^@\s]+)(?P<tail>@)")  # scheme optional: user:pw@host
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<head>\b(?:pwd|password|api[_-]?key)\s*=\s*)(?P<password>[^;\s&]+)")


def mask_secrets(text: str) -> str:
    """Replace passwords in URLs, ODBC strings and key=value pairs with ***."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + "***" + m["tail"], text)
    return _KEYWORD_PASSWORD.sub(lambda m: m["head"] + "***", text)


class _MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_secrets(record.getMessage())
        record.args = ()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exception"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(payload)


class TextFormatter(logging.Formatter):
    """Plain-text lines; secrets masked in the whole output, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def setup_logging(level: str = "INFO", fmt: str = "text", log_file: str | Path | None = None) -> None:
    """Configure the root logger once for the process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(log_file, maxBytes=10_000_000, backupCount=5))
    formatter = (
        JsonFormatter()
        if fmt == "json"
        else TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_MaskingFilter())
        root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "urllib3", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
