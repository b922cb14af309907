"""Alarm rules: from per-window anomaly flags to alert episodes.

A window is *anomalous* when its score is above the compressor's threshold. An alarm rule says
when anomalous windows amount to an alert:

- ``consecutive``: ``n`` anomalous windows in a row (the original trigger);
- ``k_of_n``: at least ``k`` of the last ``n`` windows are anomalous (tolerates the odd normal
  window inside a fault, so it fires sooner than ``n`` in a row and misses less);
- ``cusum``: a one-sided CUSUM of the score relative to the threshold,
  ``S = max(0, S + clip(score / threshold - 1, -1, 1))``, fires when ``S >= h`` (large excursions
  fire in fewer windows than small ones).

An alert is an *episode*: it opens at the window where the rule first holds (``triggered``) and
stays open until ``quiet_windows`` windows in a row have not been anomalous; only then can the rule
open a new one. So one fault that flickers raises one alert, not one per flicker.

A data gap (``breaks[i]``) restarts the rule's statistic, never the episode: a gap inside a fault
does not raise a second alert. A *suppressed* window (``suppressed[i]``: under maintenance, or the
compressor stopped or starting) restarts the statistic too, counts as normal for an open episode
and can never open one; its own anomaly flag is kept. The whole state after a window is an `AlarmState`, carried across
batches (checkpoint and stored windows) so that a run split over two batches alarms as in one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.settings import ALARM_RULES, MAX_ALARM_WINDOWS, DetectionSettings

_CUSUM_STEP = 1.0


def _encode(run: int, recent: int, cusum: float, is_open: bool, quiet: int) -> str:
    return f"{run}:{recent:x}:{cusum!r}:{int(is_open)}:{quiet}"


@dataclass(frozen=True)
class AlarmState:
    """Everything the rule needs to continue after a window.

    run:    anomalous windows in a row (also stored as consecutive_count)
    recent: bit i set when the window i steps back was anomalous (k_of_n; at most MAX_ALARM_WINDOWS bits)
    cusum:  the CUSUM statistic
    open:   an episode is open
    quiet:  non-anomalous windows in a row since the episode's last anomalous window
    """

    run: int = 0
    recent: int = 0
    cusum: float = 0.0
    open: bool = False
    quiet: int = 0

    def encode(self) -> str:
        """Compact text for the alarm_state column (exact: the float round-trips through repr)."""
        return _encode(self.run, self.recent, self.cusum, self.open, self.quiet)

    @classmethod
    def decode(cls, text: str | None, run: int = 0) -> "AlarmState":
        """The state stored as text; a row written before alarm states existed carries only its run."""
        if not text:
            return cls(run=int(run or 0))
        try:
            r, recent, cusum, is_open, quiet = text.split(":")
            return cls(int(r), int(recent, 16), float(cusum), is_open == "1", int(quiet))
        except ValueError as exc:
            raise ValueError(f"unreadable alarm state {text!r}") from exc


@dataclass(frozen=True)
class AlarmRule:
    """One alarm rule with its parameters; saved with the model and used by every command."""

    rule: str = "k_of_n"
    n: int = 20
    k: int = 12
    h: float = 5.0
    quiet_windows: int = 60

    def __post_init__(self) -> None:
        if self.rule not in ALARM_RULES:
            raise ValueError(f"unknown alarm rule {self.rule!r} (choose from {', '.join(ALARM_RULES)})")
        if not 1 <= self.n <= MAX_ALARM_WINDOWS:
            raise ValueError(f"alarm rule n = {self.n} is outside 1..{MAX_ALARM_WINDOWS}")
        if self.rule == "k_of_n" and not 1 <= self.k <= self.n:
            raise ValueError(f"alarm rule k = {self.k} must be between 1 and n = {self.n}")
        if self.h <= 0 or self.quiet_windows < 0:
            raise ValueError("alarm rule h must be > 0 and quiet_windows >= 0")

    def describe(self) -> str:
        quiet = f", quiet {self.quiet_windows}"
        if self.rule == "consecutive":
            return f"{self.n} in a row{quiet}"
        if self.rule == "k_of_n":
            return f"{self.k} of {self.n}{quiet}"
        return f"CUSUM h={self.h:g}{quiet}"

    def to_dict(self) -> dict:
        return {"rule": self.rule, "n": self.n, "k": self.k, "h": self.h, "quiet_windows": self.quiet_windows}

    @classmethod
    def from_dict(cls, data: dict) -> "AlarmRule":
        return cls(str(data["rule"]), int(data["n"]), int(data["k"]), float(data["h"]), int(data["quiet_windows"]))

    def apply(
        self,
        scores: np.ndarray,
        threshold: float,
        breaks: np.ndarray | None = None,
        initial: AlarmState | None = None,
        suppressed: np.ndarray | None = None,
    ) -> "AlarmTrace":
        """Run the rule over a score series, starting from `initial` (the state after the window before)."""
        scores = np.asarray(scores, dtype=np.float64)
        n = len(scores)
        flags = scores > threshold
        gap = np.zeros(n, dtype=bool) if breaks is None else np.asarray(breaks, dtype=bool)
        quiet_only = np.zeros(n, dtype=bool) if suppressed is None else np.asarray(suppressed, dtype=bool)
        steps = np.clip(scores / threshold - 1.0, -_CUSUM_STEP, _CUSUM_STEP) if threshold > 0 else np.where(flags, 1.0, -1.0)
        run_out, open_out, fired, states = [0] * n, [False] * n, [False] * n, [""] * n
        state = initial or AlarmState()
        run, recent, cusum, is_open, quiet = state.run, state.recent, state.cusum, state.open, state.quiet
        mask = (1 << self.n) - 1
        rule, n_rule, k, h, quiet_windows = self.rule, self.n, self.k, self.h, self.quiet_windows
        # Python scalars, not numpy elements, in the loop: it runs once per window.
        for i, (flag, restart, hush, step) in enumerate(zip(flags.tolist(), gap.tolist(), quiet_only.tolist(), steps.tolist())):
            if restart or hush:
                run, recent, cusum = 0, 0, 0.0
            flag = flag and not hush
            run = run + 1 if flag else 0
            recent = ((recent << 1) | flag) & mask
            cusum = 0.0 if hush else max(0.0, cusum + step)
            if hush:
                holds = False
            elif rule == "consecutive":
                holds = run >= n_rule
            elif rule == "k_of_n":
                holds = recent.bit_count() >= k
            else:
                holds = cusum >= h
            if is_open:
                quiet = 0 if flag else quiet + 1
                if quiet >= quiet_windows and not holds:
                    is_open = False
            elif holds:
                is_open, quiet, fired[i] = True, 0, True
            run_out[i], open_out[i] = run, is_open
            states[i] = _encode(run, recent, cusum, is_open, quiet)
        final = AlarmState(run, recent, cusum, is_open, quiet)
        return AlarmTrace(
            flags, np.array(run_out, dtype=np.int64), np.array(open_out, dtype=bool), np.array(fired, dtype=bool), np.array(states, dtype=object), final
        )

    def count_episodes(self, scores: np.ndarray, threshold: float, breaks: np.ndarray | None = None) -> int:
        """Episodes the rule would open on a score series (from a fresh state)."""
        return int(self.apply(scores, threshold, breaks).triggered.sum())


def rule_from_settings(det: DetectionSettings) -> AlarmRule:
    """The alarm rule the [detection] settings describe (consecutive uses consecutive_trigger as n)."""
    n = det.consecutive_trigger if det.alarm_rule == "consecutive" else det.alarm_n
    return AlarmRule(det.alarm_rule, n, min(det.alarm_k, n), det.cusum_h, det.quiet_windows)


@dataclass(frozen=True)
class AlarmTrace:
    """Per-window outcome of an alarm rule over one series."""

    is_anomaly: np.ndarray
    run: np.ndarray
    in_episode: np.ndarray
    triggered: np.ndarray
    states: np.ndarray  # AlarmState.encode() after each window
    final: AlarmState
