"""API key: read once at start from the environment (or a file it names), compared in constant time.

    COMPRESSOR_AD_API_KEY       the key itself
    COMPRESSOR_AD_API_KEY_FILE  a file holding the key (wins over the variable; e.g. a Docker secret)

Clients send it as `X-API-Key: <key>` (or `Authorization: Bearer <key>`, which Prometheus can send).
"""
from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Mapping

from core.errors import PipelineError

API_KEY_ENV = "COMPRESSOR_AD_API_KEY"
API_KEY_FILE_ENV = "COMPRESSOR_AD_API_KEY_FILE"
MIN_KEY_LENGTH = 16
API_KEY_HEADER = "X-API-Key"


def load_api_key(env: Mapping[str, str] | None = None) -> str | None:
    """The configured key, None when none is; PipelineError when the file is unreadable or the key too short."""
    env = os.environ if env is None else env
    key = env.get(API_KEY_ENV)
    path = env.get(API_KEY_FILE_ENV)
    if path:
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PipelineError(f"cannot read the API key file {path} ({API_KEY_FILE_ENV}): {exc.strerror}") from exc
    if not key:
        return None
    if len(key) < MIN_KEY_LENGTH:
        raise PipelineError(f"the API key is too short ({len(key)} characters; at least {MIN_KEY_LENGTH})")
    return key


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries in X-API-Key or as a Bearer token."""
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest) of the presented and the expected key."""
    return presented is not None and hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
