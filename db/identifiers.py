"""Validation of table and column names that come from configuration."""
from __future__ import annotations

import re

from core.errors import PipelineError

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]{0,62}$")


class UnsafeIdentifierError(PipelineError):
    """A configured table or column name could be used to inject SQL."""


def check_identifier(name: str, what: str) -> str:
    """Return `name` if it is a plain identifier (letters, digits, underscore, inner spaces)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name != name.strip():
        raise UnsafeIdentifierError(
            f"{what} {name!r} is not allowed: use letters, digits, underscores or inner spaces only "
            "(at most 63 characters, starting with a letter or underscore)"
        )
    return name


def error_column(feature: str) -> str:
    """Column that holds the reconstruction error of one feature, e.g. err_filter_dp."""
    return "err_" + re.sub(r"[^a-z0-9_]", "_", feature.lower())
