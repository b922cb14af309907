"""Seconds spent per named stage of a batch (reading, preprocessing, queued for inference, inference, scoring, writing)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class StageTimer:
    """Sums wall time per stage; a stage opened inside another is not counted in the outer one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: list[list] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        entry = [name, time.perf_counter(), 0.0]  # name, start, time spent in nested stages
        self._open.append(entry)
        try:
            yield
        finally:
            self._open.pop()
            elapsed = time.perf_counter() - entry[1]
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - entry[2]
            if self._open:
                self._open[-1][2] += elapsed

    def merge(self, other: "StageTimer") -> None:
        """Add another timer's totals to this one."""
        for name, seconds in other.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
