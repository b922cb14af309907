"""db/pgcopy.py's binary COPY encoding, decoded back field by field (no database needed)."""
from __future__ import annotations

import struct
from collections import Counter
from datetime import datetime

import numpy as np
import pandas as pd

from db import pgcopy


def decode(data: bytes, kinds: list[str]) -> list[tuple]:
    """The rows of a COPY binary stream (without HEADER / TRAILER) as Python values."""
    rows, at = [], 0
    while at < len(data):
        (count,), at = struct.unpack_from(">h", data, at), at + 2
        assert count == len(kinds)
        row = []
        for kind in kinds:
            (size,), at = struct.unpack_from(">i", data, at), at + 4
            if size == -1:
                row.append(None)
                continue
            raw, at = data[at : at + size], at + size
            if kind == "text":
                row.append(raw.decode("utf-8"))
            elif kind == "timestamp":
                row.append(pgcopy._PG_EPOCH + np.timedelta64(struct.unpack(">q", raw)[0], "us"))
            else:
                row.append(np.frombuffer(raw, pgcopy._FORMATS[kind])[0].item())
        rows.append(tuple(row))
    return rows


def expected(frame: pd.DataFrame) -> list[tuple]:
    out = []
    for row in frame.itertuples(index=False):
        values = []
        for value in row:
            if value is None or (isinstance(value, float) and np.isnan(value)):
                values.append(None)
            elif isinstance(value, pd.Timestamp):
                values.append(np.datetime64(value.to_datetime64(), "us"))
            elif isinstance(value, (bool, np.bool_)):
                values.append(bool(value))
            else:
                values.append(value.item() if hasattr(value, "item") else value)
        out.append(tuple(values))
    return out


def test_text_of_many_lengths_is_joined_row_by_row_and_decodes_exactly():
    rng = np.random.default_rng(0)
    n = 500
    states = [f"{i}:{i * 7919:x}:{rng.normal()!r}:{i % 2}:{i % 13}" for i in range(n)]  # hundreds of distinct lengths
    states[3] = None
    labels = np.array([None, "a", "ä, ö", "", "x" * 40], dtype=object)[rng.integers(0, 5, n)]
    frame = pd.DataFrame(
        {
            "batch": "batch-1",
            "state": states,
            "when": pd.date_range(datetime(2026, 1, 1), periods=n, freq="30s"),
            "score": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "flag": rng.random(n) < 0.5,
            "label": labels,
            "count": rng.integers(-5, 5, n),
            "tail": [f"t{'z' * (i % 17)}" for i in range(n)],
        }
    )
    kinds = ["text", "text", "timestamp", "float8", "bool", "text", "int4", "text"]
    data = pgcopy.encode_rows(frame, kinds)
    assert len(set(len(s) for s in states if s)) > pgcopy._PATTERN_LENGTHS
    assert Counter(decode(data, kinds)) == Counter(expected(frame))


def test_few_lengths_keep_one_structured_array_per_pattern():
    frame = pd.DataFrame({"mode": ["running", "stopped", None, "running"], "value": [1.0, 2.0, 3.0, np.nan]})
    kinds = ["text", "float8"]
    assert Counter(decode(pgcopy.encode_rows(frame, kinds), kinds)) == Counter(expected(frame))
    assert pgcopy.encode_rows(frame.iloc[:0], kinds) == b""
