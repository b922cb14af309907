"""Synthetic telemetry for a fleet of centrifugal compressors with tandem dry gas seals.

Each compressor has its own baselines, noise levels and slow ageing. A shared load signal
(operator set-point steps with smooth transitions, occasional start-up ramps) drives the
process and seal signals coherently; a daily ambient cycle moves the temperatures. Labelled
faults with gradual onsets are superimposed; their size is expressed in units of the
signal's normal variation left after accounting for load (noise plus ambient cycle).

Signals and nominal values (at 85 % load), each unit randomised around them:
    filter_dp 0.35 bar, seal_gas_flow 120 Nm3/h, seal_gas_diff_pressure 1.2 bar,
    seal_gas_temp 45 degC, primary_vent_flow 4 Nm3/h, primary_vent_pressure 0.35 barg,
    secondary_seal_gas_flow 10 Nm3/h, separation_seal_gas_flow 30 Nm3/h,
    separation_seal_gas_pressure 0.6 barg, seal_gas_to_vent_diff_pressure ~37 bar (derived),
    flow 50,000 Nm3/h, suction_pressure 30 bara, discharge_pressure 80 bara,
    vibration 2.5 mm/s, motor_current 400 A, temperature (discharge) 110 degC.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from core.errors import PipelineError
from core.settings import DEFAULT_FEATURES

FAULT_TYPES = (
    "seal_degradation",
    "filter_clogging",
    "bearing_wear",
    "surge",
    "fouling",
    "sensor_stuck",
    "sensor_drift",
    "sensor_spike",
)

NOMINAL_LOAD = 0.85
_DAY_S = 86_400.0
_HOUR_S = 3_600.0
_NOISE_TAU_S = 45.0  # correlation time of the AR(1) measurement noise
_THERMAL_TAU_S = 300.0  # lag of the discharge temperature behind load
_PROCESS_TAU_S = 300.0  # correlation time of small process (load) fluctuations
_MIN_FAULT_SEPARATION_S = 2 * _HOUR_S

# Independent baselines: nominal value and relative spread between units (+/-).
_NOMINAL = {
    "filter_dp": (0.35, 0.20),
    "seal_gas_flow": (120.0, 0.15),
    "seal_gas_diff_pressure": (1.2, 0.15),
    "seal_gas_temp": (45.0, 0.10),
    "primary_vent_flow": (4.0, 0.20),
    "primary_vent_pressure": (0.35, 0.15),
    "secondary_seal_gas_flow": (10.0, 0.15),
    "separation_seal_gas_flow": (30.0, 0.15),
    "separation_seal_gas_pressure": (0.6, 0.15),
    "flow": (50_000.0, 0.15),
    "suction_pressure": (30.0, 0.10),
    "discharge_pressure": (80.0, 0.10),
    "vibration": (2.5, 0.20),
    "motor_current": (400.0, 0.15),
    "temperature": (110.0, 0.10),
}
# Nominal measurement-noise standard deviations; each unit scales them by 0.7-1.4.
_NOISE_SD = {
    "filter_dp": 0.006,
    "seal_gas_flow": 1.5,
    "seal_gas_diff_pressure": 0.02,
    "seal_gas_temp": 0.3,
    "primary_vent_flow": 0.15,
    "primary_vent_pressure": 0.006,
    "secondary_seal_gas_flow": 0.2,
    "separation_seal_gas_flow": 0.5,
    "separation_seal_gas_pressure": 0.008,
    "seal_gas_to_vent_diff_pressure": 0.15,
    "flow": 250.0,
    "suction_pressure": 0.15,
    "discharge_pressure": 0.35,
    "vibration": 0.08,
    "motor_current": 4.0,
    "temperature": 0.5,
}
# Response of temperatures to the ambient deviation (degC per degC).
_AMBIENT_GAIN = {"temperature": 0.15, "seal_gas_temp": 0.1}  # seal gas is heated
# Ageing: signals that drift slowly, and the direction of the drift.
_AGEING = {
    "filter_dp": 1.0,
    "primary_vent_flow": 1.0,
    "vibration": 1.0,
    "motor_current": 1.0,
    "temperature": 1.0,
    "discharge_pressure": -1.0,
}

# Process faults: signal -> signed effect at full development, in multiples of the event size k.
_PROCESS_EFFECTS = {
    "seal_degradation": {
        "primary_vent_flow": 1.0,
        "primary_vent_pressure": 0.6,
        "seal_gas_to_vent_diff_pressure": -0.6,
    },
    "filter_clogging": {"filter_dp": 1.0, "seal_gas_flow": -0.6},
    "bearing_wear": {"vibration": 1.0, "temperature": 0.6},
    "fouling": {"discharge_pressure": -1.0, "motor_current": 1.0},
    "surge": {"flow": 1.0, "discharge_pressure": 0.7, "motor_current": 0.5, "vibration": 0.6},
}
# Sensor faults: signals they may hit (stuck only on noisy ones, so the flat line shows).
_SENSOR_TARGETS = {
    "sensor_stuck": ("flow", "motor_current", "vibration", "primary_vent_flow", "seal_gas_flow"),
    "sensor_drift": DEFAULT_FEATURES,
    "sensor_spike": DEFAULT_FEATURES,
}
_EVENT_SIZE = (6.0, 10.0)  # k, in residual standard deviations
DETECTABLE_SD = 2.0  # events' `detectable_from`: the first sample the fault has moved a signal this many residual SDs
_SPIKE_SIZE = (6.0, 12.0)


@dataclass(frozen=True)
class SimulatedFleet:
    """Telemetry (one row per compressor and sample) and the labelled fault events.

    `events`: compressor_id, fault_type, start, end (inclusive) and detectable_from, the first
    sample at which the fault has moved some signal by DETECTABLE_SD residual SDs (NaT if it
    never does): with gradual onsets, no detector can be expected to alarm much before it.
    """

    telemetry: pd.DataFrame
    events: pd.DataFrame


def simulate_fleet(
    n_compressors: int = 5,
    days: float = 7.0,
    start: datetime = datetime(2026, 1, 1),
    seed: int | None = 7,
    interval_s: float = 30.0,
    features: Sequence[str] = DEFAULT_FEATURES,
    fault_free_days: float = 0.0,
    realisation_seed: int | None = None,
    age_days: float = 0.0,
    load_range: tuple[float, float] = (0.6, 1.0),
) -> SimulatedFleet:
    """Simulate `n_compressors` for `days`, one row every `interval_s` seconds.

    No fault starts before `start + fault_free_days`. Same seed, same frames.
    `seed` fixes the units (baselines, noise levels, ageing rates). With `realisation_seed`, the
    load, noise and faults come from that seed instead, so two realisation seeds give two
    separately generated periods of the same fleet; `age_days` is how far the units have aged
    at `start`, and `load_range` the span of operator set-points.
    """
    if n_compressors < 1:
        raise PipelineError(f"n_compressors must be at least 1, got {n_compressors}")
    if not days > 0:
        raise PipelineError(f"days must be > 0, got {days}")
    if not interval_s >= 1e-9:
        raise PipelineError(f"interval_s must be > 0 (at least 1 ns), got {interval_s}")
    if not fault_free_days >= 0:
        raise PipelineError(f"fault_free_days must be >= 0, got {fault_free_days}")
    features = tuple(features)
    unknown = [f for f in features if f not in DEFAULT_FEATURES]
    if not features or unknown or len(set(features)) != len(features):
        raise PipelineError(
            f"features must be a non-empty, duplicate-free subset of {DEFAULT_FEATURES}; "
            f"unknown: {unknown}"
        )

    start_ts = pd.Timestamp(start)
    if start_ts.tzinfo is not None:
        start_ts = start_ts.tz_convert("UTC").tz_localize(None)
    interval_ns = round(interval_s * 1e9)
    n = max(1, math.ceil(round(days * _DAY_S * 1e9) / interval_ns))
    step = np.timedelta64(interval_ns, "ns")
    timestamps = start_ts.as_unit("ns").to_datetime64() + np.arange(n) * step
    dt = interval_ns / 1e9
    t_s = np.arange(n) * dt
    first_fault = math.ceil(fault_free_days * _DAY_S / dt)

    rng = np.random.default_rng(seed)
    hour_of_day = ((start_ts - start_ts.normalize()).total_seconds() + t_s) / _HOUR_S
    ambient_amplitude = rng.uniform(4.0, 7.0)  # degC, coldest at 03:00, warmest at 15:00
    ambient = ambient_amplitude * np.sin(2 * np.pi * (hour_of_day - 9.0) / 24.0)
    # A fault type is only simulated if it shows on at least one requested signal.
    fault_types = tuple(f for f in FAULT_TYPES if set(_fault_signals(f)) & set(features))

    width = max(2, len(str(n_compressors)))
    ids = [f"C{i + 1:0{width}d}" for i in range(n_compressors)]
    columns: dict[str, list[np.ndarray]] = {f: [] for f in features}
    labels, events = [], []
    units = rng.spawn(n_compressors)
    periods = np.random.default_rng(realisation_seed).spawn(n_compressors) if realisation_seed is not None else [None] * n_compressors
    for cid, unit_rng, period_rng in zip(ids, units, periods):
        values, label, unit_events = _simulate_compressor(
            unit_rng, t_s, dt, ambient, ambient_amplitude, features, fault_types, first_fault, period_rng, age_days, load_range
        )
        for f in features:
            columns[f].append(values[f])
        labels.append(label)
        events += [(cid, ftype, timestamps[s], timestamps[e], timestamps[d] if d <= e else None) for ftype, s, e, d in unit_events]

    telemetry = pd.DataFrame(
        {
            "timestamp": np.tile(timestamps, n_compressors),
            "compressor_id": np.repeat(np.array(ids), n),
            **{f: np.concatenate(columns[f]) for f in features},
            "label": np.concatenate(labels),
        },
        copy=False,  # the arrays are fresh; skip consolidating them into one block
    )
    event_frame = pd.DataFrame(
        {
            "compressor_id": pd.Series([e[0] for e in events], dtype=str),
            "fault_type": pd.Series([e[1] for e in events], dtype=str),
            "start": pd.Series(np.array([e[2] for e in events], dtype="datetime64[ns]")),
            "end": pd.Series(np.array([e[3] for e in events], dtype="datetime64[ns]")),
            "detectable_from": pd.Series(np.array([e[4] or np.datetime64("NaT") for e in events], dtype="datetime64[ns]")),
        }
    )
    return SimulatedFleet(telemetry=telemetry, events=event_frame)


def _simulate_compressor(
    rng: np.random.Generator,
    t_s: np.ndarray,
    dt: float,
    ambient: np.ndarray,
    ambient_amplitude: float,
    features: tuple[str, ...],
    fault_types: tuple[str, ...],
    first_fault: int,
    period_rng: np.random.Generator | None = None,
    age_days: float = 0.0,
    load_range: tuple[float, float] = (0.6, 1.0),
) -> tuple[dict[str, np.ndarray], np.ndarray, list[tuple[str, int, int, int]]]:
    """One unit: normal operation plus faults. Returns signals, labels and (type, start, end, detectable from) rows.

    The unit's own properties come from `rng`; the period (load, noise, faults) from `period_rng`
    when given, else from `rng` in the original draw order (same seed, same frames).
    """
    n = len(t_s)
    base = {s: v * (1 + rng.uniform(-spread, spread)) for s, (v, spread) in _NOMINAL.items()}
    noise_sd = {s: sd * rng.uniform(0.7, 1.4) for s, sd in _NOISE_SD.items()}
    ambient = ambient + rng.normal(0.0, 1.0)  # site micro-climate offset
    # Normal variation left once load is accounted for: noise plus the ambient cycle.
    residual_sd = {
        s: math.hypot(sd, _AMBIENT_GAIN.get(s, 0.0) * ambient_amplitude / math.sqrt(2))
        for s, sd in noise_sd.items()
    }

    ageing = {s: rng.uniform(0.01, 0.05) for s in sorted(_AGEING)} if period_rng is not None else {}
    draw = period_rng if period_rng is not None else rng
    load = _load_profile(draw, t_s, load_range)
    load = load * (1 + _ar1(draw, n, 0.004, math.exp(-dt / _PROCESS_TAU_S)))  # process fluctuations
    values = _normal_operation(base, load, _lag(load, math.exp(-dt / _THERMAL_TAU_S)), ambient)
    phi = math.exp(-dt / _NOISE_TAU_S)
    days_elapsed = age_days + t_s / _DAY_S
    for s in values:
        values[s] = values[s] + _ar1(draw, n, noise_sd[s], phi)
        if s in _AGEING:
            rate = ageing[s] if ageing else draw.uniform(0.01, 0.05)
            values[s] += _AGEING[s] * rate * residual_sd[s] * days_elapsed

    label = np.zeros(n, dtype=np.int64)
    events = []
    for ftype, s, e in _schedule_faults(draw, n, dt, first_fault, fault_types):
        before = {signal: trace[s : e + 1].copy() for signal, trace in values.items()}
        _apply_fault(draw, values, residual_sd, ftype, s, e, t_s, features)
        label[s : e + 1] = 1
        events.append((ftype, s, e, s + _first_row_at(values, before, residual_sd, s, e, DETECTABLE_SD)))
    return values, label, events


def _first_row_at(values: dict[str, np.ndarray], before: dict[str, np.ndarray], residual_sd: dict[str, float], s: int, e: int, size_sd: float) -> int:
    """Offset of the first row of s..e where the fault has moved some signal by `size_sd` residual SDs
    (e - s + 1 if it never does)."""
    moved = np.zeros(e - s + 1, dtype=bool)
    for signal, old in before.items():
        moved |= np.abs(values[signal][s : e + 1] - old) >= size_sd * residual_sd[signal]
    return int(np.argmax(moved)) if moved.any() else e - s + 1


def _normal_operation(
    base: dict[str, float], load: np.ndarray, lagged_load: np.ndarray, ambient: np.ndarray
) -> dict[str, np.ndarray]:
    """Noise-free signals for a load fraction (1.0 = design flow) and ambient deviation (degC)."""
    x = load / NOMINAL_LOAD  # 1.0 at nominal load
    ps = base["suction_pressure"] * (1 + 0.04 * (1 - x))  # suction line losses grow with flow
    head = (0.35 + 0.65 * load**2) / (0.35 + 0.65 * NOMINAL_LOAD**2)  # head ~ speed squared
    rise = base["discharge_pressure"] - base["suction_pressure"]
    pd_ = ps + rise * head
    # Seals are referenced to a balance-line pressure a little above suction.
    p_ref = ps + 0.15 * (pd_ - ps)
    seal_ratio = p_ref / (base["suction_pressure"] + 0.15 * rise)
    temperature = (
        base["temperature"]
        + 25.0 * (lagged_load - NOMINAL_LOAD)
        + _AMBIENT_GAIN["temperature"] * ambient
    )
    # Seal gas leaks past the inboard labyrinth: more with speed and sealed pressure.
    seal_gas_flow = base["seal_gas_flow"] * 0.5 * (seal_ratio**2 + x)
    seal_gas_dp = base["seal_gas_diff_pressure"] * (1 + 0.02 * (x - 1))
    vent_ratio = seal_ratio**1.3  # primary seal leakage grows with sealed pressure
    vent_flow = base["primary_vent_flow"] * vent_ratio
    vent_pressure = base["primary_vent_pressure"] * (0.7 + 0.3 * vent_ratio**2)  # flare line losses
    return {
        "filter_dp": base["filter_dp"] * (seal_gas_flow / base["seal_gas_flow"]) ** 2,  # dp ~ flow^2
        "seal_gas_flow": seal_gas_flow,
        "seal_gas_diff_pressure": seal_gas_dp,
        "seal_gas_temp": base["seal_gas_temp"]
        + 5.0 * (lagged_load - NOMINAL_LOAD)
        + _AMBIENT_GAIN["seal_gas_temp"] * ambient,
        "primary_vent_flow": vent_flow,
        "primary_vent_pressure": vent_pressure,
        "secondary_seal_gas_flow": base["secondary_seal_gas_flow"] * (0.95 + 0.05 * x),
        "separation_seal_gas_flow": base["separation_seal_gas_flow"] * (0.9 + 0.1 * x),
        "separation_seal_gas_pressure": base["separation_seal_gas_pressure"] * (0.97 + 0.03 * x),
        "seal_gas_to_vent_diff_pressure": p_ref + seal_gas_dp - vent_pressure,
        "flow": base["flow"] * x,
        "suction_pressure": ps,
        "discharge_pressure": pd_,
        "vibration": base["vibration"] * (0.85 + 0.15 * x),
        # Shaft power ~ flow x head ~ speed cubed, on top of the no-load current.
        "motor_current": base["motor_current"] * (0.3 + 0.7 * load**3) / (0.3 + 0.7 * NOMINAL_LOAD**3),
        "temperature": temperature,
    }


def _load_profile(rng: np.random.Generator, t_s: np.ndarray, load_range: tuple[float, float] = (0.6, 1.0)) -> np.ndarray:
    """Load fraction: set-point steps every ~5 h with 5-20 min transitions, plus rare start-ups."""
    span = t_s[-1] + 1.0
    gaps = _HOUR_S + rng.exponential(4 * _HOUR_S, size=int(span / _HOUR_S) + 2)
    changes = np.concatenate([[-np.inf], np.cumsum(gaps) - rng.uniform(0, 5 * _HOUR_S)])
    changes = changes[changes < span]
    ramps = rng.uniform(300.0, 1200.0, size=len(changes))
    levels = rng.uniform(*load_range, size=len(changes) + 1)  # change k goes levels[k] -> levels[k+1]
    k = np.searchsorted(changes, t_s, side="right") - 1
    load = levels[k] + (levels[k + 1] - levels[k]) * _smoothstep((t_s - changes[k]) / ramps[k])

    # Start-ups after short stops: quick fall to minimum load, then a 20-45 min ramp back up.
    for at in rng.uniform(0, span, size=rng.poisson(span / (4 * _DAY_S))):
        fall, rise, low = rng.uniform(120, 300), rng.uniform(1200, 2700), rng.uniform(0.35, 0.5)
        window = (t_s >= at - fall) & (t_s <= at + rise)
        tw = t_s[window]
        factor = np.where(
            tw < at,
            1 - (1 - low) * _smoothstep((tw - at + fall) / fall),
            low + (1 - low) * _smoothstep((tw - at) / rise),
        )
        load[window] *= factor
    return load


def _schedule_faults(
    rng: np.random.Generator, n: int, dt: float, first: int, fault_types: tuple[str, ...]
) -> list[tuple[str, int, int]]:
    """Non-overlapping (type, first row, last row) events, about one per 1-2 days, >= 2 h apart."""
    if not fault_types:
        return []
    mean_spacing_s = rng.uniform(1.0, 2.0) * _DAY_S
    idle_scale_s = mean_spacing_s - 3.5 * _HOUR_S - _MIN_FAULT_SEPARATION_S  # mean duration 3.5 h
    separation = math.ceil(_MIN_FAULT_SEPARATION_S / dt)
    types = _shuffled_cycle(rng, fault_types)
    events = []
    begin = first + round(rng.exponential(idle_scale_s) / dt)
    while True:
        ftype = next(types)
        hours = rng.uniform(2.0 if ftype == "sensor_stuck" else 1.0, 6.0)
        end = begin + max(1, round(hours * _HOUR_S / dt)) - 1
        if end >= n:
            return events
        events.append((ftype, begin, end))
        begin = end + separation + round(rng.exponential(idle_scale_s) / dt)


def _fault_signals(ftype: str) -> tuple[str, ...]:
    """Signals a fault type can show on."""
    return tuple(_PROCESS_EFFECTS.get(ftype, ())) or _SENSOR_TARGETS[ftype]


def _shuffled_cycle(rng: np.random.Generator, items: tuple[str, ...]) -> Iterator[str]:
    """Endless sequence of shuffled rounds, so every fault type comes up regularly."""
    while True:
        for i in rng.permutation(len(items)):
            yield items[i]


def _apply_fault(
    rng: np.random.Generator,
    values: dict[str, np.ndarray],
    residual_sd: dict[str, float],
    ftype: str,
    s: int,
    e: int,
    t_s: np.ndarray,
    features: tuple[str, ...],
) -> None:
    """Superimpose one fault on rows s..e (inclusive), in place."""
    m = e - s + 1
    rows = slice(s, e + 1)
    k = rng.uniform(*_EVENT_SIZE)
    onset = max(1, round(rng.uniform(0.1, 0.4) * m))
    envelope = _smoothstep(np.arange(1, m + 1) / onset)

    if ftype in _PROCESS_EFFECTS:
        shape = np.ones(m)
        if ftype == "surge":  # recycle-valve hunting / surge cycling, period 1.5-4 min
            period = rng.uniform(90.0, 240.0)
            shape = np.sin(2 * np.pi * (t_s[rows] - t_s[s]) / period + rng.uniform(0, 2 * np.pi))
        for signal, gain in _PROCESS_EFFECTS[ftype].items():
            if ftype == "surge" and signal == "vibration":
                effect = 1.0 + 0.5 * np.abs(shape)  # vibration rises on every cycle
            elif ftype == "surge" and signal == "discharge_pressure":
                effect = -shape  # pressure swings against flow
            else:
                effect = shape
            values[signal][rows] += gain * k * residual_sd[signal] * envelope * effect
        if ftype == "bearing_wear":
            growing = 1.5 * residual_sd["vibration"] * envelope
            values["vibration"][rows] += rng.normal(0.0, 1.0, m) * growing
        return

    signal = str(rng.choice([f for f in _SENSOR_TARGETS[ftype] if f in features]))
    trace = values[signal]
    if ftype == "sensor_stuck":
        trace[rows] = trace[max(s - 1, 0)]
    elif ftype == "sensor_drift":
        trace[rows] += rng.choice([-1.0, 1.0]) * k * residual_sd[signal] * np.arange(1, m + 1) / m
    else:  # sensor_spike: single-sample spikes, several per hour
        hits = rng.random(m) < rng.uniform(0.08, 0.2)
        hits[rng.integers(m)] = True
        size = rng.uniform(*_SPIKE_SIZE, m) * rng.choice([-1.0, 1.0], m)
        trace[rows] += np.where(hits, size * residual_sd[signal], 0.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, smooth S-curve in between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _ar1(rng: np.random.Generator, n: int, sd: float, phi: float) -> np.ndarray:
    """Stationary AR(1) series with standard deviation `sd` (a truncated moving average)."""
    taps = max(1, math.ceil(math.log(1e-6) / math.log(phi))) if 0 < phi < 1 else 1
    innovations = rng.normal(0.0, sd * math.sqrt(1 - phi**2), n + taps - 1)
    return np.convolve(innovations, phi ** np.arange(taps), mode="valid")


def _lag(x: np.ndarray, alpha: float) -> np.ndarray:
    """First-order lag (exponential smoothing with factor `alpha`), started at rest."""
    taps = max(1, math.ceil(math.log(1e-6) / math.log(alpha))) if 0 < alpha < 1 else 1
    kernel = alpha ** np.arange(taps)
    padded = np.concatenate([np.full(taps - 1, x[0]), x])
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")
