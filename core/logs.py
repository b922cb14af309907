"""Operator-facing logging: one line per step, plain text or JSON, secrets masked.

Invariants: masking is linear in the length of its input (no backtracking regex over unbounded
text); a log message carries at most MAX_MESSAGE_CHARS characters; a text log line never contains
a control character from its message (a newline in a value cannot forge a second line); a record
logged with `extra={"console": False}` goes to the log file only (the terminal already got it).
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import re
from pathlib import Path

MAX_MESSAGE_CHARS = 4000
# A run of characters that is neither '@' nor whitespace, starting where such a run starts and
# followed by '@': the lookbehind keeps the scan from restarting inside a run (linear time).
_BEFORE_AT = re.compile(r"(?<![^@\s])[^@\s]+(?=@)")
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<head>\b(?:pwd|password|api[_-]?key)\s*=\s*)(?P<password>[^;\s&]+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Structured fields a log shipper can filter on (JSON format), passed with `extra=`.
FIELDS = ("compressor", "batch_id", "mode", "status", "rows_read", "windows_scored", "anomaly_points", "triggered_events", "rows_rejected", "duration_s", "command", "lease_owner")


def _mask_userinfo(match: re.Match) -> str:
    """`[scheme://]user:password` before an '@' -> `[scheme://]user:***` (a `://` colon is not the user's)."""
    segment = match.group()
    colon = segment.find(":")
    while colon != -1 and segment.startswith("//", colon + 1):
        colon = segment.find(":", colon + 1)
    if colon == -1 or colon + 1 == len(segment):
        return segment
    return segment[: colon + 1] + "***"


def mask_secrets(text: str) -> str:
    """Replace passwords in URLs, ODBC strings and key=value pairs with ***, in linear time."""
    if "@" in text:
        text = _BEFORE_AT.sub(_mask_userinfo, text)
    return _KEYWORD_PASSWORD.sub(lambda m: m["head"] + "***", text)


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """At most `limit` characters, saying how many were cut."""
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text) - limit} more characters]"


def printable(value: object, limit: int = 200) -> str:
    """A value for a log line or a table: control characters escaped (\\n, \\x1b), clipped to `limit`."""
    text = str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), clip(text, limit))


class _MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = clip(mask_secrets(record.getMessage()))
        record.args = ()
        return True


class _FileOnlyFilter(logging.Filter):
    """Keeps `extra={"console": False}` records off the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; FIELDS given with `extra=` become keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                payload[name] = value if isinstance(value, (int, float, bool)) else printable(value)
        if record.exc_info:
            payload["exception"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(payload)


class TextFormatter(logging.Formatter):
    """Plain-text lines; secrets masked in the whole output, tracebacks included; the message escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message, MAX_MESSAGE_CHARS + 100)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def setup_logging(level: str = "INFO", fmt: str = "text", log_file: str | Path | None = None) -> None:
    """Configure the root logger once for the process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler()
    console.addFilter(_FileOnlyFilter())
    handlers: list[logging.Handler] = [console]
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
