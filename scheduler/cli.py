"""Command line: `python run_scheduler.py [global options] COMMAND ...`.

Every command exits 0 on success and non-zero on failure. A failure the operator can act on (the
product's own errors, core/errors.py, and database errors) ends with a one-line reason on stderr
and in --log-file; any other exception is a bug: its traceback goes to --log-file (and to stderr
at --log-level DEBUG), a one-line hint to stderr. A reader that closes stdout early (`| head`)
ends the output quietly.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from core.errors import CalibrationError, PipelineError
from core.logs import mask_secrets, printable, setup_logging
from core.settings import DEFAULT_DB_URL, DEFAULT_MODEL_DIR, PROJECT_ROOT, THRESHOLD_RULES, Settings, load_settings, with_section
from core.tf_startup import import_tensorflow
from core.threads import use_single_threaded_kernels
from core.version import __version__
from models.registry import REGISTRY
from service import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WINDOWS, DEFAULT_PORT

log = logging.getLogger("compressor_ad")


def iso_datetime(text: str) -> datetime:
    """Parse an ISO date/time into naive UTC, inside the supported range (core/timerange.py)."""
    from core.timerange import parse_timestamp

    try:
        return parse_timestamp(text, "date/time")
    except PipelineError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _engine(settings: Settings):
    from db.engine import make_engine

    return make_engine(settings.db_url)


def _tables(settings: Settings):
    from db.schema import build_tables

    return build_tables(settings)


# ------------------------------------------------------------------ commands
def cmd_simulate(args, settings: Settings) -> int:
    from db.schema import create_all
    from db.source import write_telemetry
    from simulation.fleet import simulate_fleet

    start = args.start or datetime(2026, 1, 1)
    fleet = simulate_fleet(args.compressors, args.days, start=start, seed=args.seed, interval_s=settings.data.sampling_interval_s, features=settings.data.features, fault_free_days=args.fault_free_days)
    frame = fleet.telemetry.rename(
        columns={"timestamp": settings.source.timestamp_column, "compressor_id": settings.source.compressor_column, "label": settings.source.label_column or "label"}
    )
    engine, tables = _engine(settings), _tables(settings)
    create_all(engine, tables)
    written = write_telemetry(engine, tables, frame, progress=lambda done, total: log.info("simulate: wrote %d/%d rows", done, total))
    log.info("simulated %d compressors x %.1f days: %d rows, %d labelled fault events", args.compressors, args.days, written, len(fleet.events))
    if args.events_csv:
        fleet.events.to_csv(args.events_csv, index=False)
    return 0


def cmd_train(args, settings: Settings) -> int:
    from models.artifacts import load_for_settings
    from models.training import add_compressor_to_bundle
    from pipeline.publish import publish, train_from_source
    from pipeline.training_data import load_normal_windows

    if args.detector:
        settings = with_section(settings, "detection", detector=args.detector)
    if args.threshold_rule:
        settings = with_section(settings, "detection", threshold_rule=args.threshold_rule)
    if args.epochs:
        settings = with_section(settings, "training", epochs=args.epochs)
    engine, tables = _engine(settings), _tables(settings)
    if args.add_compressor:
        bundle = load_for_settings(settings)
        if args.add_compressor in bundle.compressors:
            raise PipelineError(f"compressor {args.add_compressor!r} is already in model version {bundle.version}; `calibrate --compressor` recalibrates it")
        sets = load_normal_windows(engine, tables, settings, args.start, args.end, [args.add_compressor])
        bundle = add_compressor_to_bundle(bundle, args.add_compressor, sets[args.add_compressor], settings)
    else:
        bundle = train_from_source(engine, tables, settings, args.start, args.end)
    path = publish(bundle, settings.model_dir, promote_it=not args.no_promote)
    if not args.no_promote:
        _warm_in_child(args, settings, bundle.version)
    if args.mlflow or os.environ.get("MLFLOW_TRACKING_URI"):
        from models.tracking import log_training

        log_training(bundle, settings, path)
    print(bundle.version)
    return 0


def _warm_in_child(args, settings: Settings, version: str) -> None:
    """`models warm VERSION` in a new process (this one started TensorFlow before the version had a name)."""
    from models.compile_cache import enabled

    if not enabled():
        return
    command = [sys.executable, str(PROJECT_ROOT / "run_scheduler.py"), "--model-dir", str(settings.model_dir), "--log-level", args.log_level, "--log-format", args.log_format]
    if args.log_file:
        command += ["--log-file", args.log_file]
    if subprocess.run([*command, "models", "warm", version], check=False).returncode:
        log.warning("model version %s: the compilation cache was not warmed (see above); the first run compiles instead", version)


def _bundle(settings: Settings, version: str | None = None, detector: str | None = None):
    """Model VERSION, else the newest version of DETECTOR, else the promoted version."""
    from models.artifacts import list_versions, load_for_settings

    if version is None and detector is not None:
        found = [m["version"] for m in list_versions(settings.model_dir) if m.get("detector") == detector]
        if not found:
            raise PipelineError(f"no {detector} model version in {settings.model_dir}: train one with `train --detector {detector}`")
        version = found[-1]
    bundle = load_for_settings(settings, version)
    if detector is not None and bundle.detector.name != detector:
        raise PipelineError(f"model version {bundle.version} is a {bundle.detector.name} model, not {detector}")
    return bundle


def _runner(settings: Settings, detector: str | None = None):
    from scheduler.runner import Runner

    return Runner(settings, _engine(settings), _bundle(settings, detector=detector) if detector else None)


def _executor(args, settings: Settings):
    """The local Runner, or a DaskExecutor for `--executor dask` (a context manager either way)."""
    if getattr(args, "executor", "local") == "local":
        if getattr(args, "dask_address", None):
            raise PipelineError("--dask-address is only used with --executor dask")
        return contextlib.nullcontext(_runner(settings, getattr(args, "detector", None)))
    if getattr(args, "detector", None):
        raise PipelineError("--detector works with the local executor only (Dask workers use the promoted version)")
    if not args.dask_address:
        raise PipelineError("--executor dask needs --dask-address (tcp://host:8786 for a cluster, local:N for N processes here)")
    from scheduler.dask_executor import DaskExecutor

    return DaskExecutor(settings, args.dask_address)


def _expose_metrics(args, executor) -> None:
    """Serve the daemon's Prometheus metrics (`run --interval M --metrics-port P`), either executor."""
    if args.interval is None:
        raise PipelineError("--metrics-port needs --interval (a one-off run has nothing to scrape)")
    from scheduler.metrics import expose

    expose(executor, args.metrics_host, args.metrics_port, args.interval)


def _run_metrics_settings(args, settings: Settings) -> Settings:
    """--pushgateway / --metrics-textfile over [metrics]; they belong to `run --once`."""
    given = {k: v for k, v in (("pushgateway", args.pushgateway), ("textfile", args.metrics_textfile)) if v}
    if given and args.interval is not None:
        raise PipelineError("--pushgateway and --metrics-textfile are for run --once (the daemon serves --metrics-port)")
    return with_section(settings, "metrics", **given) if given else settings


def _run_once(args, settings: Settings, executor):
    """One run; its metrics then pushed or written (`[metrics]`), whatever its outcome, either executor."""
    config = settings.metrics
    if not (config.pushgateway or config.textfile):
        return executor.run_once(min_records=args.min_records)
    from scheduler.metrics import DaemonMetrics
    from scheduler.metrics_export import export_run

    metrics = DaemonMetrics()
    metrics.run_interval.set(config.run_interval_minutes * 60)
    executor.observers.append(metrics)
    try:
        report = executor.run_once(min_records=args.min_records)
    except Exception:
        try:
            export_run(metrics, config, succeeded=False)
        except PipelineError as exc:  # the run's own error is the one to report
            log.error("%s", exc)
        raise
    try:
        export_run(metrics, config, report.ok)
    except PipelineError as exc:
        if report.ok:
            raise PipelineError(f"{exc} (the run itself succeeded)") from exc
        log.error("%s", exc)
    return report


def cmd_run(args, settings: Settings) -> int:
    settings = _run_metrics_settings(args, settings)
    with _executor(args, settings) as executor:
        if args.metrics_port is not None:
            _expose_metrics(args, executor)
        if args.interval is not None:
            return executor.run_forever(args.interval, args.min_records, args.max_runs)
        report = _run_once(args, settings, executor)
    if not report.ok:
        raise PipelineError(f"run {report.batch_id} failed for compressor(s): {', '.join(report.failed)}")
    return 0


def cmd_backfill(args, settings: Settings) -> int:
    with _executor(args, settings) as runner:
        report = runner.backfill(args.start, args.end, args.compressor, args.advance_checkpoint)
    if not report.ok:
        raise PipelineError(f"backfill {report.batch_id} failed for compressor(s): {', '.join(report.failed)}")
    return 0


def cmd_evaluate(args, settings: Settings) -> int:
    from evaluation.evaluate import evaluate_range
    from evaluation.report import overall_text, write_report

    bundle = _bundle(settings, args.model, args.detector)
    result = evaluate_range(_engine(settings), _tables(settings), settings, bundle, args.start, args.end, args.compressor)
    out = Path(args.out) if args.out else PROJECT_ROOT / "var/reports" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = write_report(result, settings, out)
    print(f"model {result.model_version} ({result.detector}), {', '.join(result.compressors)}, {result.start} .. {result.end}")
    print(overall_text(result))
    print(f"report: {path}")
    return 0


def cmd_import_csv(args, settings: Settings) -> int:
    from pipeline.importer import CsvMapping, import_csv

    if args.features:
        settings = with_section(settings, "data", features=tuple(f.strip() for f in args.features.split(",") if f.strip()))
    sep = "\t" if args.sep in ("\\t", "tab") else args.sep
    mapping = CsvMapping(args.timestamp_col, args.compressor_col, args.compressor_id, args.label_col, sep)
    import_csv(_engine(settings), _tables(settings), settings, Path(args.file), mapping)
    return 0


def cmd_status(args, settings: Settings) -> int:
    from scheduler.retry import with_retries
    from scheduler.status import fleet_status, format_status

    engine, tables, cfg = _engine(settings), _tables(settings), settings.scheduler
    rows = with_retries(lambda: fleet_status(engine, tables, settings), cfg.retry_attempts, cfg.retry_base_delay_s, "reading the status")
    print(json.dumps(rows, default=str, indent=1) if args.json else format_status(rows))
    return 0


def cmd_calibrate(args, settings: Settings) -> int:
    from models.artifacts import load_for_settings
    from models.training import recalibrate_bundle
    from pipeline.publish import publish
    from pipeline.training_data import load_normal_windows

    if args.threshold_rule:
        settings = with_section(settings, "detection", threshold_rule=args.threshold_rule)
    if args.end <= args.start:
        raise PipelineError(f"calibration end {args.end.isoformat()} is not after its start {args.start.isoformat()}")
    bundle = load_for_settings(settings)
    compressors = args.compressor or bundle.compressors
    sets = load_normal_windows(_engine(settings), _tables(settings), settings, args.start, args.end, compressors)
    missing = [c for c in compressors if c not in sets]
    if missing:
        raise CalibrationError(f"no normal windows between {args.start.isoformat()} and {args.end.isoformat()} for compressor(s) {', '.join(missing)}")
    parent = bundle.version
    bundle = recalibrate_bundle(bundle, sets, settings, (args.start.isoformat(), args.end.isoformat()))
    publish(bundle, settings.model_dir, promote_it=not args.no_promote)
    log.info("calibrated %d compressor(s) of %s on %s .. %s: version %s", len(sets), parent, args.start, args.end, bundle.version)
    print(bundle.version)
    return 0


def _calibration_lines(meta: dict) -> list[str]:
    """One indented line per compressor: its threshold and how it was calibrated."""
    from models.calibration import Calibration

    lines = []
    for cid in meta.get("compressors", []):
        record = meta.get("calibration", {}).get(cid)
        detail = Calibration(**record).describe() if record else "calibrated in-sample (saved before held-out calibration)"
        lines.append(f"      {cid}: threshold {meta['thresholds'][cid]:.4g}, {detail}")
    return lines


def cmd_models(args, settings: Settings) -> int:
    from models.artifacts import current_version, list_versions, promote
    from models.compile_cache import warm

    if args.models_command == "promote":
        promote(settings.model_dir, args.version)
        print(f"promoted {args.version}")
        use_single_threaded_kernels()  # compiled as `run` will run it
        warm(settings.model_dir, args.version)
        return 0
    if args.models_command == "warm":
        warm(settings.model_dir, args.version or current_version(settings.model_dir))
        return 0
    try:
        current = current_version(settings.model_dir)
    except PipelineError:
        current = None
    versions = list_versions(settings.model_dir)
    if not versions:
        print(f"no model versions in {settings.model_dir}")
    for meta in versions:
        mark = "*" if meta["version"] == current else " "
        if "error" in meta:
            print(f"{mark} {meta['version']}  UNREADABLE: {meta['error']}")
        else:
            parent = meta.get("extra", {}).get("parent_version")
            alarm = meta.get("alarm_rule", {}).get("rule", "consecutive")
            print(
                f"{mark} {meta['version']}  {meta['detector']:<8} {meta['threshold_rule']:<16} alarm={alarm:<11} "
                f"compressors={len(meta['compressors'])} created={meta['created_at']}" + (f" parent={parent}" if parent else "")
            )
            for line in _calibration_lines(meta):
                print(line)
    return 0


def cmd_serve(args, settings: Settings) -> int:
    from service.server import serve

    return serve(
        settings, args.host, args.port, args.insecure_no_auth, args.max_windows, args.max_body_bytes, args.ssl_certfile, args.ssl_keyfile
    )


def cmd_demo(args, settings: Settings) -> int:
    from scheduler.demo import run_demo

    return run_demo(settings, args)


# ------------------------------------------------------------------- parser
def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=["local", "dask"], default="local", help="local: this process; dask: one task per compressor on a Dask cluster")
    parser.add_argument("--dask-address", metavar="ADDRESS", help="tcp://host:8786 (an existing Dask scheduler) or local:N (N worker processes on this machine)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_scheduler.py",
        description="Compressor anomaly detection: batch scoring of fleet telemetry in SQL.",
        epilog=(
            f"Relative paths: the defaults are under the project root ({PROJECT_ROOT}); paths in a --config file are "
            "relative to that file's directory; paths given here or in environment variables are relative to the working directory."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help="TOML settings file (default: $COMPRESSOR_AD_CONFIG or built-in defaults)")
    parser.add_argument("--db-url", help=f"SQLAlchemy database URL (default: $COMPRESSOR_AD_DB_URL or {DEFAULT_DB_URL} under the project root)")
    parser.add_argument("--model-dir", help=f"directory of model versions (default: $COMPRESSOR_AD_MODEL_DIR or {DEFAULT_MODEL_DIR} under the project root)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.add_argument("--log-file", help="also log to this file (rotated at 10 MB, 5 kept)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("simulate", help="write simulated fleet telemetry with fault labels to the source table")
    p.add_argument("--compressors", type=int, default=5)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--start", type=iso_datetime, help="first timestamp (default 2026-01-01)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--fault-free-days", type=float, default=0.0, help="no fault starts in the first D days")
    p.add_argument("--events-csv", help="also write the labelled fault events to this CSV")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("train", help="train on normal rows of a range, calibrate thresholds, save (and promote) a version")
    p.add_argument("--start", type=iso_datetime)
    p.add_argument("--end", type=iso_datetime)
    p.add_argument("--detector", choices=tuple(REGISTRY))
    p.add_argument("--threshold-rule", choices=THRESHOLD_RULES)
    p.add_argument("--epochs", type=int)
    p.add_argument("--add-compressor", metavar="ID", help="add one compressor to the promoted model without retraining the others")
    p.add_argument("--no-promote", action="store_true", help="save the version without making it current")
    p.add_argument("--mlflow", action="store_true", help="log the run to MLflow ($MLFLOW_TRACKING_URI, else var/mlruns); on whenever that variable is set")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("calibrate", help="refit normal statistics and thresholds of the promoted model on a later normal period (weights kept)")
    p.add_argument("--start", type=iso_datetime, required=True)
    p.add_argument("--end", type=iso_datetime, required=True)
    p.add_argument("--compressor", action="append", help="only this compressor (repeatable; default: every compressor of the model)")
    p.add_argument("--threshold-rule", choices=THRESHOLD_RULES)
    p.add_argument("--no-promote", action="store_true", help="save the version without making it current")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("run", help="score new rows since each compressor's checkpoint")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one run, then exit (cron / Task Scheduler)")
    mode.add_argument("--interval", type=float, metavar="MINUTES", help="run now and every MINUTES until SIGTERM")
    p.add_argument("--min-records", type=int, help="skip a compressor with fewer new rows")
    p.add_argument("--max-runs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this port (with --interval)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--pushgateway", metavar="URL", help="with --once: push the run's metrics to this Prometheus Pushgateway (default [metrics] pushgateway)")
    p.add_argument("--metrics-textfile", metavar="PATH", help="with --once: write the run's metrics to this node-exporter textfile, *.prom (default [metrics] textfile)")
    p.add_argument("--detector", choices=tuple(REGISTRY), help="use the newest version of this detector instead of the promoted one")
    _add_executor_options(p)
    p.set_defaults(func=cmd_run, scoring_only=True)

    p = sub.add_parser("backfill", help="(re)score a date range; idempotent")
    p.add_argument("--start", type=iso_datetime, required=True)
    p.add_argument("--end", type=iso_datetime, required=True)
    p.add_argument("--compressor", action="append", help="only this compressor (repeatable)")
    p.add_argument("--advance-checkpoint", action="store_true", help="also move the live checkpoint forward")
    p.add_argument("--detector", choices=tuple(REGISTRY), help="use the newest version of this detector instead of the promoted one")
    _add_executor_options(p)
    p.set_defaults(func=cmd_backfill, scoring_only=True)

    p = sub.add_parser("evaluate", help="score a labelled range in memory and report metrics against the labels")
    p.add_argument("--start", type=iso_datetime, required=True)
    p.add_argument("--end", type=iso_datetime, required=True)
    p.add_argument("--model", metavar="VERSION", help="model version (default: the promoted one)")
    p.add_argument("--detector", choices=tuple(REGISTRY), help="the newest version of this detector (when --model is not given)")
    p.add_argument("--compressor", action="append", help="only this compressor (repeatable)")
    p.add_argument("--out", metavar="DIR", help="report directory (default var/reports/<UTC time> under the project root)")
    p.set_defaults(func=cmd_evaluate, scoring_only=True)

    p = sub.add_parser("import-csv", help="load a CSV of telemetry into the source table (all rows or none)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--timestamp-col", required=True, metavar="COLUMN", help="ISO 8601 timestamps (naive = UTC)")
    p.add_argument("--compressor-col", metavar="COLUMN", help="column of compressor ids (or --compressor-id)")
    p.add_argument("--compressor-id", metavar="ID", help="one compressor id for the whole file (or --compressor-col)")
    p.add_argument("--label-col", metavar="COLUMN", help="0/1 label column")
    p.add_argument("--sep", default=",", help="field separator (default ','; '\\t' or 'tab' for tabs)")
    p.add_argument("--features", metavar="A,B,C", help="signal columns to load instead of the configured features")
    p.set_defaults(func=cmd_import_csv)

    p = sub.add_parser("status", help="per compressor: checkpoint, rows waiting, last batch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("models", help="list model versions or promote one")
    msub = p.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="list versions (* = current)")
    promote_parser = msub.add_parser("promote", help="make VERSION the one the scheduler uses")
    promote_parser.add_argument("version")
    warm_parser = msub.add_parser("warm", help="compile VERSION's inference functions into the compilation cache (train and promote do it too)")
    warm_parser.add_argument("version", nargs="?", help="default: the promoted version")
    warm_parser.set_defaults(scoring_only=True)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("serve", help="HTTP scoring API: POST /score, GET /health, GET /metrics (API key in X-API-Key)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--insecure-no-auth", action="store_true", help="serve without an API key (local tests only)")
    p.add_argument("--max-windows", type=int, default=DEFAULT_MAX_WINDOWS, help="most windows in one request (more: 413)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest request body (more: 413)")
    p.add_argument("--ssl-certfile", help="serve HTTPS with this PEM certificate (needs --ssl-keyfile)")
    p.add_argument("--ssl-keyfile", help="PEM private key of --ssl-certfile")
    p.set_defaults(func=cmd_serve, scoring_only=True)

    p = sub.add_parser("demo", help="simulate, train, score and report on the embedded SQLite database")
    p.add_argument("--compressors", type=int, default=5)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--train-days", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=str(PROJECT_ROOT / "var/demo"), help="where the report and plot go (default var/demo under the project root)")
    p.set_defaults(func=cmd_demo)

    from scheduler import alert_commands, opcua_commands

    opcua_commands.add_parsers(sub)
    alert_commands.add_parsers(sub, iso_datetime)
    return parser


def _fail(command: str, reason: str, code: int = 1) -> int:
    """The one-line reason on stderr and, as an ERROR record, in --log-file (not twice on the terminal)."""
    line = printable(mask_secrets(reason), 2000)
    print(f"error: {line}", file=sys.stderr)
    log.error("%s failed: %s", command, line, extra={"console": False, "command": command})
    return code


def _bug(command: str, exc: Exception, log_file: str | None) -> int:
    """An exception that is not the product's own: the traceback to the log (the terminal too at DEBUG), a hint to stderr."""
    debug = log.isEnabledFor(logging.DEBUG)
    log.error("%s failed unexpectedly", command, exc_info=True, extra={"console": debug, "command": command})
    where = "traceback above" if debug else f"traceback in {log_file}" if log_file else "run with --log-level DEBUG for the traceback"
    detail = f": {str(exc).splitlines()[0]}" if str(exc) else ""
    return _fail(command, f"unexpected {type(exc).__name__}{detail} (a bug, not bad input; {where})")


def _quiet_stdout() -> None:
    """After a broken pipe: send what is left of stdout to /dev/null so the exit flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format, args.log_file)
    command = " ".join(filter(None, (args.command, getattr(args, "models_command", None) or getattr(args, "alerts_command", None) or getattr(args, "maintenance_command", None))))
    try:
        settings = load_settings(args.config, db_url=args.db_url, model_dir=args.model_dir)
        if getattr(args, "scoring_only", False):
            use_single_threaded_kernels()
        if args.command in ("train", "demo"):
            import_tensorflow()  # scoring commands start it only for the XLA graph of a large call (models/inference.py)
        code = args.func(args, settings)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except PipelineError as exc:
        log.debug("command failed", exc_info=True)
        return _fail(command, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except sa.exc.SQLAlchemyError as exc:
        log.debug("command failed", exc_info=True)
        return _fail(command, f"database: {str(exc).splitlines()[0]}")
    except KeyboardInterrupt:
        return _fail(command, "interrupted", 130)
    except Exception as exc:
        return _bug(command, exc, args.log_file)
