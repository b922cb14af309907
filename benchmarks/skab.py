"""SKAB outlier-detection benchmark through the pipeline: `python benchmarks/skab.py [--data PATH]`.

The published protocol (SKAB's notebooks and core/metrics.py): per run file (34 files;
anomaly-free/ excluded) fit on the first 400 rows, predict 0/1 for every row of the file, the 400
fitted ones included (a row without a full window is 0); concatenate all files and compute F1,
FAR = FP / (FP + TN) and MAR = FN / (FN + TP) over every row. That is the leaderboard's figure.
The same figures over the rows after the 400 fitted ones only ("unseen") are the transfer
figure: what the model does on data it has not been fitted or calibrated on.

How the pipeline runs it, in a temporary SQLite database per trained model:
1. every file is loaded with the CSV importer (pipeline/importer.py) as one compressor
   (`valve1_03`, ...), label column `anomaly`;
2. one compressor-aware model (shared encoder, one decoder head per file; or one forest per file)
   is trained by models.training.train_bundle on each file's first 400 rows, read with
   pipeline.training_data.load_normal_windows up to the 400th row's timestamp. The protocol fits on
   those rows whatever their label (other/2.csv is labelled anomalous from its row 104), so the
   training read ignores the label column;
3. the scheduler (scheduler.runner.Runner.backfill) scores each file from its first full window
   to its end and writes the result tables;
4. a row is predicted anomalous when the window ending at it is inside an alert episode of the
   model's alarm rule (`in_alert` in lstm_predictions_detailed; with N = 1 in a row and no quiet
   period that is `is_anomaly`); a row without a window is predicted normal.

Settings come from a TOML file (default benchmarks/skab.toml). With --config the configuration is
run as it stands. Without it, a small grid is searched around benchmarks/skab.toml: signals
(the six fast ones, or all eight), window {10, 30}, threshold_k {3, 4, 6} and, for the LSTM
autoencoder, score {mse, mahalanobis}. The flags --signals/--window/--k/--score pin a dimension.
Every score method and k of one trained network are calibrated with
models.calibration.calibrate_compressor on that network's held-out windows (training is not
repeated for them). With --defaults, the product's own defaults run with only the data layout
configured (benchmarks/skab_layout.toml): no search, nothing tuned on SKAB; --window/--k/--score
then override that one default for an experiment. The search selects on the benchmark files
themselves, as the protocol has no separate validation files.

The best configuration of a detector is the one with the highest F1 among those whose FAR does not
exceed the top published row's (Conv-AE, 13.55 %): the leaderboard counts a win only on both.

Prints every configuration tried, the published leaderboard with the best row of each detector
inserted by F1, the split by folder, one JSON line per detector and, last, the best one:
{"detector", "f1", "far", "mar", "unseen_f1", "unseen_far", "unseen_mar"} (FAR and MAR in %, as in the
leaderboard).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.logs import setup_logging  # noqa: E402
from core.settings import Settings, load_settings, with_section  # noqa: E402
from db.engine import make_engine  # noqa: E402
from db.schema import build_tables  # noqa: E402
from db.source import read_rows  # noqa: E402
from evaluation.metrics import point_metrics  # noqa: E402
from models.artifacts import ModelBundle, save_bundle  # noqa: E402
from models.alarms import rule_from_settings  # noqa: E402
from models.calibration import calibrate_compressor, split_normal  # noqa: E402
from models.registry import REGISTRY  # noqa: E402
from models.training import train_bundle  # noqa: E402
from pipeline.importer import CsvMapping, import_csv  # noqa: E402
from pipeline.training_data import load_normal_windows  # noqa: E402
from scheduler.runner import Runner  # noqa: E402

log = logging.getLogger("benchmarks.skab")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = Path(__file__).resolve().with_name("skab.toml")
LAYOUT_CONFIG = Path(__file__).resolve().with_name("skab_layout.toml")
FOLDERS = ("valve1", "valve2", "other")
TRAIN_ROWS = 400
TIMESTAMP_COLUMN = "datetime"
LABEL_COLUMN = "anomaly"
ALL_SIGNALS = (
    "Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure",
    "Temperature", "Thermocouple", "Voltage", "Volume Flow RateRMS",
)
FAST_SIGNALS = tuple(s for s in ALL_SIGNALS if s not in ("Temperature", "Thermocouple"))
SIGNAL_SETS = {"fast": FAST_SIGNALS, "all": ALL_SIGNALS}
GRID = {"signals": ("fast", "all"), "window": (10, 30), "k": (3.0, 4.0, 6.0), "score": ("mse", "mahalanobis")}
# The published leaderboard (SKAB README): algorithm, F1, FAR %, MAR %.
LEADERBOARD = (
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("PCA T²+Q", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T²", 0.66, 19.21, 42.60),
    ("LSTM-VAE", 0.56, 9.13, 55.03),
    ("Vanilla AE", 0.39, 2.59, 75.15),
    ("Isolation Forest", 0.29, 2.56, 82.89),
)
TOP_FAR = min(far for _, f1, far, _ in LEADERBOARD if f1 == max(r[1] for r in LEADERBOARD))  # Conv-AE, 13.55 %


@dataclass(frozen=True)
class SkabFile:
    """One run file and the compressor id it is loaded as."""

    path: Path
    folder: str
    cid: str


@dataclass
class RunRows:
    """A run as read back from the source table: timestamps and labels in time order."""

    file: SkabFile
    times: np.ndarray
    labels: np.ndarray

    @property
    def train_end(self) -> datetime:
        return pd.Timestamp(self.times[TRAIN_ROWS - 1]).to_pydatetime()

    @property
    def start(self) -> datetime:
        return pd.Timestamp(self.times[0]).to_pydatetime()

    @property
    def score_end(self) -> datetime:
        return pd.Timestamp(self.times[-1]).to_pydatetime()


@dataclass(frozen=True)
class Variant:
    """One configuration: the settings that differ between the rows of the search."""

    detector: str
    features: tuple[str, ...]
    window: int
    k: float
    score: str
    consecutive_trigger: int = 1
    threshold_rule: str = "mean_std"

    @property
    def signals(self) -> str:
        return next((name for name, s in SIGNAL_SETS.items() if s == self.features), f"{len(self.features)} signals")

    def label(self) -> str:
        score = f", {self.score}" if REGISTRY[self.detector].score_methods else ""
        trigger = f", N={self.consecutive_trigger}" if self.consecutive_trigger > 1 else ""
        rule = f"k={self.k:g}" if self.threshold_rule == "mean_std" else self.threshold_rule
        return f"{self.signals}, W={self.window}, {rule}{score}{trigger}"


@dataclass
class Outcome:
    """Metrics of one configuration over the scored rows, overall and per folder."""

    variant: Variant
    metrics: dict[str, dict]
    scored_rows: int
    model_version: str
    db_url: str
    train_s: float
    score_s: float
    windows_written: int
    import_s: float
    alarm_rule: str

    @property
    def overall(self) -> dict:
        """Every row, as the leaderboard counts."""
        return self.metrics["all"]

    @property
    def unseen(self) -> dict:
        """The rows after the fitted ones only."""
        return self.metrics["unseen"]


# ------------------------------------------------------------------ inputs
def default_data_dir() -> Path:
    return Path(os.environ.get("SKAB_DATA") or REPO.parent / "shared" / "datasets" / "skab")


def find_files(data_dir: Path, quick: bool = False) -> list[SkabFile]:
    """The run files of valve1/, valve2/ and other/ in numeric order (2 per folder with quick)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SystemExit(f"SKAB data directory not found: {data_dir} (pass --data or set SKAB_DATA)")
    files = []
    for folder in FOLDERS:
        paths = sorted((data_dir / folder).glob("*.csv"), key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem)
        files += [SkabFile(p, folder, f"{folder}_{int(p.stem):02d}" if p.stem.isdigit() else f"{folder}_{p.stem}") for p in paths[: 2 if quick else None]]
    if not files:
        raise SystemExit(f"no run files under {data_dir}/{{{','.join(FOLDERS)}}}/*.csv")
    return files


def variant_settings(base: Settings, variant: Variant, db_url: str, model_dir: Path) -> Settings:
    """The product settings of one configuration."""
    settings = base.replace(db_url=db_url, model_dir=model_dir)
    settings = with_section(settings, "data", features=variant.features, window=variant.window)
    return with_section(
        settings, "detection", detector=variant.detector, threshold_k=variant.k, score=variant.score,
        threshold_rule=variant.threshold_rule, consecutive_trigger=variant.consecutive_trigger,
    )


def import_runs(engine: sa.Engine, settings: Settings, files: list[SkabFile]) -> list[RunRows]:
    """Load every file with the CSV importer, then read its timestamps and labels back."""
    tables = build_tables(settings)
    runs = []
    for f in files:
        mapping = CsvMapping(TIMESTAMP_COLUMN, compressor_id=f.cid, label_col=LABEL_COLUMN, sep=";")
        import_csv(engine, tables, settings, f.path, mapping)
        with engine.connect() as conn:
            frame = read_rows(conn, tables, settings, f.cid, with_label=True)
        if len(frame) <= TRAIN_ROWS:
            raise SystemExit(f"{f.path}: {len(frame)} rows; the protocol needs more than {TRAIN_ROWS}")
        times = frame[settings.source.timestamp_column].to_numpy(dtype="datetime64[ns]")
        runs.append(RunRows(f, times, frame[settings.source.label_column].to_numpy(dtype=np.int64)))
    return runs


# ---------------------------------------------------------------- pipeline
def train(engine: sa.Engine, settings: Settings, runs: list[RunRows]) -> tuple[ModelBundle, dict]:
    """One model over every run, each compressor fitted on its first 400 rows (labels ignored)."""
    fit_settings = settings.replace(source=dataclasses.replace(settings.source, label_column=None))
    fit_tables = build_tables(fit_settings)
    sets = {}
    for run in runs:
        sets.update(load_normal_windows(engine, fit_tables, fit_settings, None, run.train_end, [run.file.cid]))
    training_range = (pd.Timestamp(min(r.times[0] for r in runs)).isoformat(), pd.Timestamp(max(r.times[TRAIN_ROWS - 1] for r in runs)).isoformat())
    return train_bundle(sets, settings, training_range), sets


def recalibrated(trained: ModelBundle, sets: dict, settings: Settings) -> ModelBundle:
    """The trained detector under this configuration's score method and threshold factor."""
    detector = trained.detector
    if REGISTRY[detector.name].score_methods:  # statistics refitted by calibration, without touching the trained bundle's
        detector = detector.with_score_method(settings.detection.score)
    rule = rule_from_settings(settings.detection)
    calibration = {
        cid: calibrate_compressor(detector, cid, split_normal(sets[cid], settings.training.calibration_fraction, settings.data.window).calibration, settings, rule)
        for cid in trained.thresholds
    }
    thresholds = {cid: c.threshold for cid, c in calibration.items()}
    return ModelBundle(detector, thresholds, settings.detection.threshold_rule, rule, trained.training_range, calibration={c: r.to_dict() for c, r in calibration.items()})


def score(engine: sa.Engine, settings: Settings, bundle: ModelBundle, runs: list[RunRows]) -> int:
    """Backfill every run from its first row to its end with the scheduler; returns windows written."""
    runner = Runner(settings, engine, bundle)
    written = 0
    for run in runs:
        report = runner.backfill(run.start, run.score_end, only=[run.file.cid])
        if not report.ok:
            raise RuntimeError(f"backfill of {run.file.cid} failed")
        written += sum(o.windows_scored for o in report.outcomes)
    return written


def predictions(engine: sa.Engine, settings: Settings, bundle: ModelBundle, run: RunRows) -> np.ndarray:
    """0/1 per row of the run from lstm_predictions_detailed (a row without a window is 0)."""
    detailed = build_tables(settings).detailed
    stmt = sa.select(detailed.c.window_end, detailed.c.in_alert).where(
        detailed.c.compressor_id == run.file.cid,
        detailed.c.model_version == bundle.version,
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    scored = run.times
    flags = np.zeros(len(scored), dtype=bool)
    if rows:
        ends = pd.to_datetime(pd.Series([r[0] for r in rows])).to_numpy(dtype="datetime64[ns]")
        alerted = np.array([bool(r[1]) for r in rows])
        position = np.searchsorted(scored, ends)
        found = (position < len(scored)) & (scored[np.minimum(position, len(scored) - 1)] == ends)
        flags[position[found]] = alerted[found]
    return flags.astype(np.int64)


def evaluate(runs: list[RunRows], preds: list[np.ndarray]) -> dict[str, dict]:
    """point_metrics over every row ("all") and per folder, and over the rows after the fitted ones ("unseen")."""
    labels = [r.labels for r in runs]
    out = {
        "all": point_metrics(np.concatenate(labels), np.concatenate(preds)),
        "unseen": point_metrics(np.concatenate([y[TRAIN_ROWS:] for y in labels]), np.concatenate([p[TRAIN_ROWS:] for p in preds])),
    }
    for folder in FOLDERS:
        chosen = [i for i, r in enumerate(runs) if r.file.folder == folder]
        if chosen:
            out[folder] = point_metrics(np.concatenate([labels[i] for i in chosen]), np.concatenate([preds[i] for i in chosen]))
    return out


def run_group(files: list[SkabFile], base: Settings, variants: list[Variant], work_dir: Path) -> list[Outcome]:
    """Variants sharing detector, signals and window: import once, train once, score each."""
    work_dir.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{work_dir / 'skab.sqlite'}"
    first = variant_settings(base, variants[0], db_url, work_dir / "models")
    engine = make_engine(db_url)
    try:
        started = time.perf_counter()
        runs = import_runs(engine, first, files)
        import_s = time.perf_counter() - started
        log.info("imported %d files (%d rows) in %.1f s", len(runs), sum(len(r.times) for r in runs), import_s)
        started = time.perf_counter()
        trained, sets = train(engine, first, runs)
        train_s = time.perf_counter() - started
        log.info("trained %s (%s, W=%d) on %d compressors in %.1f s", first.detection.detector, variants[0].signals, variants[0].window, len(sets), train_s)
        outcomes = []
        for variant in variants:
            settings = variant_settings(base, variant, db_url, work_dir / "models")
            bundle = trained if variant == variants[0] else recalibrated(trained, sets, settings)
            save_bundle(bundle, settings.model_dir)
            started = time.perf_counter()
            written = score(engine, settings, bundle, runs)
            preds = [predictions(engine, settings, bundle, run) for run in runs]
            score_s = time.perf_counter() - started
            outcome = Outcome(variant, evaluate(runs, preds), sum(len(p) for p in preds), bundle.version, db_url, train_s, score_s, written, import_s, bundle.alarm.describe())
            m = outcome.overall
            u = outcome.unseen
            log.info(
                "%s [%s]: F1 %.4f FAR %.2f %% MAR %.2f %% over %d rows; after the fitted rows F1 %.4f FAR %.2f %% MAR %.2f %% (scored in %.1f s)",
                variant.detector, variant.label(), m["f1"], 100 * m["far"], 100 * m["mar"], outcome.scored_rows, u["f1"], 100 * u["far"], 100 * u["mar"], score_s,
            )
            outcomes.append(outcome)
        return outcomes
    finally:
        engine.dispose()


def run_benchmark(files: list[SkabFile], base: Settings, variants: list[Variant], work_dir: Path) -> list[Outcome]:
    """Every variant, trained once per (detector, signals, window) group, in its own database."""
    groups: dict[tuple, list[Variant]] = {}
    for variant in variants:
        groups.setdefault((variant.detector, variant.features, variant.window), []).append(variant)
    outcomes = []
    for i, members in enumerate(groups.values()):
        # the configured score method and k first: that bundle is train_bundle's own
        members.sort(key=lambda v: (v.score != base.detection.score, v.k != base.detection.threshold_k))
        outcomes += run_group(files, base, members, Path(work_dir) / f"group{i}")
    return outcomes


# ------------------------------------------------------------------ output
def _best(outcomes: list[Outcome]) -> Outcome:
    """Highest F1 among configurations whose FAR does not exceed the top published row's (any, if none)."""
    within = [o for o in outcomes if 100 * o.overall["far"] <= TOP_FAR]
    return max(within or outcomes, key=lambda o: (o.overall["f1"], -o.overall["far"]))


def _rows(m: dict) -> int:
    return int(m["tp"] + m["fp"] + m["tn"] + m["fn"])


def _unseen(o: Outcome) -> dict:
    """F1 / FAR % / MAR % over the rows after the fitted ones."""
    u = o.unseen
    return {"unseen_f1": round(u["f1"], 4), "unseen_far": round(100 * u["far"], 2), "unseen_mar": round(100 * u["mar"], 2)}


def _row(name: str, f1: float, far: float, mar: float, digits: int) -> str:
    return f"| {name:<62} | {f1:6.{digits}f} | {far:6.2f} | {mar:6.2f} |"


def report(outcomes: list[Outcome], n_files: int) -> list[Outcome]:
    """Print the configurations, the leaderboard, the split by folder and the JSON lines."""
    print(f"\nConfigurations tried ({n_files} files, {outcomes[0].scored_rows} rows; after the fitted rows: {_rows(outcomes[0].unseen)}):")
    for o in sorted(outcomes, key=lambda o: -o.overall["f1"]):
        m, u = o.overall, o.unseen
        print(f"  {REGISTRY[o.variant.detector].title:<16} {o.variant.label():<45} F1 {m['f1']:.4f}  FAR {100 * m['far']:6.2f} %  MAR {100 * m['mar']:6.2f} %"
              f"  | after the fitted rows F1 {u['f1']:.4f}  FAR {100 * u['far']:6.2f} %  MAR {100 * u['mar']:6.2f} %"
              + ("  beats the top row" if m["f1"] > LEADERBOARD[0][1] and 100 * m["far"] <= TOP_FAR else ""))
    bests = [_best([o for o in outcomes if o.variant.detector == d]) for d in REGISTRY if any(o.variant.detector == d for o in outcomes)]
    rows = [(name, f1, far, mar, False) for name, f1, far, mar in LEADERBOARD]
    for o in bests:
        m = o.overall
        rows.append((f"{REGISTRY[o.variant.detector].title} (this pipeline: {o.variant.label()})", m["f1"], 100 * m["far"], 100 * m["mar"], True))
    rows.sort(key=lambda r: -r[1])  # stable: a project row goes below published rows of equal F1
    print("\nSKAB leaderboard (outlier detection, F1 / FAR % / MAR % over every row, as published):")
    print(f"| {'algorithm':<62} | {'F1':>6} | {'FAR %':>6} | {'MAR %':>6} |")
    print(f"|{'-' * 64}|{'-' * 8}|{'-' * 8}|{'-' * 8}|")
    for name, f1, far, mar, ours in rows:  # published F1 has two decimals
        print(_row(("**" + name + "**") if ours else name, f1, far, mar, 4 if ours else 2))
    print("\nBy folder (best configuration of each detector):")
    for o in bests:
        parts = [f"{f}: F1 {m['f1']:.4f} FAR {100 * m['far']:.2f} % MAR {100 * m['mar']:.2f} %" for f, m in o.metrics.items() if f in FOLDERS]
        print(f"  {REGISTRY[o.variant.detector].title:<16} " + " | ".join(parts))
    for o in bests:
        m, v = o.overall, o.variant
        print(json.dumps({
            "detector": v.detector, "f1": round(m["f1"], 4), "far": round(100 * m["far"], 2), "mar": round(100 * m["mar"], 2), **_unseen(o),
            "signals": list(v.features), "window": v.window, "threshold_k": v.k, "score": v.score,
            "consecutive_trigger": v.consecutive_trigger, "threshold_rule": v.threshold_rule, "alarm_rule": o.alarm_rule,
            "rows": o.scored_rows, "unseen_rows": _rows(o.unseen),
            "import_s": round(o.import_s, 1), "train_s": round(o.train_s, 1), "score_s": round(o.score_s, 1),
        }))
    best = _best(bests)
    m = best.overall
    print(json.dumps({"detector": best.variant.detector, "f1": round(m["f1"], 4), "far": round(100 * m["far"], 2), "mar": round(100 * m["mar"], 2), **_unseen(best)}))
    return bests


# --------------------------------------------------------------------- main
def base_settings(args: argparse.Namespace) -> Settings:
    """Settings from the TOML file, with --epochs / --seed applied."""
    settings = load_settings(LAYOUT_CONFIG if args.defaults else args.config or DEFAULT_CONFIG, env={})
    training = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    return with_section(settings, "training", **training) if training else settings


def variants_for(args: argparse.Namespace, base: Settings) -> list[Variant]:
    """The configurations to run: the TOML's own with --config, else the small grid."""
    det = base.detection
    if args.detector:
        detectors = tuple(REGISTRY) if args.detector == "both" else (args.detector,)
    else:
        detectors = (det.detector,) if args.config else tuple(REGISTRY)
    if args.defaults:  # the product's defaults; --window/--k/--score override one of them for an experiment
        window, k, method = (base.data.window if args.window is None else args.window), (det.threshold_k if args.k is None else args.k), args.score or det.score
        return [Variant(det.detector, base.data.features, window, k, method, det.consecutive_trigger, det.threshold_rule)]
    if args.config:
        dims = {"signals": (base.data.features,), "window": (base.data.window,), "k": (det.threshold_k,), "score": (det.score,)}
    else:
        dims = {"signals": tuple(SIGNAL_SETS[s] for s in GRID["signals"]), "window": GRID["window"], "k": GRID["k"], "score": GRID["score"]}
    if args.signals:
        dims["signals"] = (SIGNAL_SETS[args.signals],)
    for name in ("window", "k", "score"):
        if getattr(args, name) is not None:
            dims[name] = (getattr(args, name),)
    variants = []
    for detector in detectors:
        scores = dims["score"] if REGISTRY[detector].score_methods else (det.score,)  # a detector without score methods has one score
        for features, window, k, method in itertools.product(dims["signals"], dims["window"], dims["k"], scores):
            variants.append(Variant(detector, tuple(features), int(window), float(k), method, det.consecutive_trigger))
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="SKAB directory (default: $SKAB_DATA or ../shared/datasets/skab)")
    parser.add_argument("--config", type=Path, default=None, help="run exactly this TOML configuration (default: search around benchmarks/skab.toml)")
    parser.add_argument("--defaults", action="store_true", help="the product's defaults with only the data layout configured (benchmarks/skab_layout.toml)")
    parser.add_argument("--detector", choices=(*REGISTRY, "both"), help="default: both, or the config's with --config")
    parser.add_argument("--window", type=int)
    parser.add_argument("--k", type=float, help="threshold_k of the mean_std rule")
    parser.add_argument("--score", choices=("mse", "mahalanobis"))
    parser.add_argument("--signals", choices=tuple(SIGNAL_SETS))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--quick", action="store_true", help="2 files per folder (smoke run)")
    parser.add_argument("--verbose", action="store_true", help="also the pipeline's own log lines (epochs, batches, alerts)")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    if not args.verbose:
        for name in ("models", "pipeline", "scheduler", "db"):
            logging.getLogger(name).setLevel(logging.ERROR)  # the per-run ALERT lines are warnings
    started = time.perf_counter()
    files = find_files(args.data or default_data_dir(), args.quick)
    base = base_settings(args)
    variants = variants_for(args, base)
    log.info("%d files, %d configurations, settings from %s", len(files), len(variants), LAYOUT_CONFIG if args.defaults else args.config or DEFAULT_CONFIG)
    with tempfile.TemporaryDirectory(prefix="skab-") as work:
        outcomes = run_benchmark(files, base, variants, Path(work))
    log.info("benchmark finished in %.1f s", time.perf_counter() - started)
    report(outcomes, len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
