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


# PostgreSQL truncates names beyond 63 bytes (MariaDB refuses beyond 64): every name made from a
# configured one is checked against the smaller limit before any table is created.
MAX_DERIVED_LENGTH = 63


def check_derived(names: dict[str, str], what: str) -> None:
    """`names` maps each derived name (an err_ column, an index) to the configured name it comes from;
    raise UnsafeIdentifierError when one is too long or two configured names give the same derived name."""
    for derived, origin in names.items():
        if len(derived.encode("utf-8")) > MAX_DERIVED_LENGTH:
            raise UnsafeIdentifierError(
                f"{what} {derived!r} made from {origin!r} is {len(derived)} characters, more than the {MAX_DERIVED_LENGTH} "
                f"PostgreSQL and MariaDB keep: shorten {origin!r} to at most {MAX_DERIVED_LENGTH - len(derived) + len(origin)} characters"
            )
