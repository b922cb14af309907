"""Request and response bodies of POST /score.

A request names one compressor and carries one or more windows; a window has one field per
signal of the model (its names, e.g. `filter_dp`), each a list of exactly `window` finite
numbers (JSON numbers only: `true` or `"1.5"` is a 422), oldest first, sampled at the configured interval:

    {"compressor_id": "C01",
     "windows": [{"filter_dp": [0.51, 0.52, ...30 values], "seal_gas_flow": [...], ...}]}

Unknown fields are refused, so a misspelt signal name is a 422 naming it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, create_model

FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]


def window_field_name(position: int) -> str:
    """Python name of the field of the signal at `position` (its JSON name is the signal's)."""
    return f"signal_{position}"


def request_model(
    features: tuple[str, ...], window: int, limits: tuple[Sequence[float], Sequence[float]], example_id: str | None = None
) -> type[BaseModel]:
    """The ScoreRequest model for a model's signals and window length; `example_id` is shown in the schema.

    `limits` are each signal's (low, high) reading range, both included (pipeline/validate.py
    value_limits): a reading outside is a 422, and the published schema states the range.
    """
    low, high = limits
    fields = {
        window_field_name(i): (
            Annotated[list[Annotated[FiniteFloat, Field(ge=float(low[i]), le=float(high[i]))]], Field(min_length=window, max_length=window)],
            Field(alias=name, description=f"{window} values of {name}, oldest first, each in {float(low[i]):g} .. {float(high[i]):g}"),
        )
        for i, name in enumerate(features)
    }
    window_model = create_model("Window", __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields)
    return create_model(
        "ScoreRequest",
        __config__=ConfigDict(extra="forbid"),
        compressor_id=(
            str,
            Field(min_length=1, max_length=64, strict=True, description="compressor id as in the source table", examples=[example_id] if example_id else None),
        ),
        windows=(list[window_model], Field(min_length=1, description="windows to score, each independent of the others")),
    )


class WindowResult(BaseModel):
    """Score of one window."""

    score: float
    threshold: float
    is_anomaly: bool
    feature_errors: dict[str, float]
    top_features: list[str]
    model_version: str


class ScoreResponse(BaseModel):
    """Results in the order of the request's windows."""

    compressor_id: str
    model_version: str
    threshold: float
    results: list[WindowResult]


class ErrorBody(BaseModel):
    """Body of a 401, 404 or 413 answer."""

    detail: str


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str
    message: str


class ValidationErrorBody(BaseModel):
    """Body of a 422 answer: the first problem in `detail`, up to 20 in `errors`."""

    detail: str
    errors: list[FieldError]
