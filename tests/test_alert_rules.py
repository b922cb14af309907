"""deploy/prometheus/rules.yml under `promtool`, and the example Alertmanager configuration under
`amtool`: the rules load, their unit tests (tests/prometheus/rules_test.yml) pass, and they use
only metrics the scheduler exports."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from prometheus_tools import require
from test_deploy import exported_metric_names, promql_metric_names

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "rules_test.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTS = {"CompressorAdRunFailing", "CompressorAdNoSuccessfulRun", "CompressorAdCheckpointLag", "CompressorAlertOpen", "CompressorThresholdNotHolding", "CompressorAdNotificationBacklog"}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_load_and_pass_their_unit_tests():
    promtool = require("promtool")["promtool"]
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    tested = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_rule_is_unit_tested_and_uses_exported_metrics():
    assert {r["alert"] for r in rules()} == ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert tested == ALERTS, f"no firing case for {sorted(ALERTS - tested)}"
    exported = exported_metric_names()
    for rule in rules():
        used = promql_metric_names(rule["expr"])
        assert used and used <= exported, f"{rule['alert']}: not exported: {sorted(used - exported)}"
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_alertmanager_example_is_valid():
    amtool = require("amtool")["amtool"]
    checked = run(amtool, "check-config", str(ALERTMANAGER))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert {r["receiver"] for r in config["route"]["routes"]} <= receivers
    routed = [r for r in config["route"]["routes"] if 'alertname = "CompressorAlertOpen"' in r["matchers"]]
    assert routed and routed[0]["group_by"] == ["alertname", "compressor_id"]
