"""The Prometheus alert rules: promtool checks, unit tests, and names the sidecar exports."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import SidecarProcess
from tests.scrape import exported_names, promql_metric_names, require_promtool

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULE_TESTS = RULES_DIR / "alerts.test.yml"
SEVERITIES = {"critical", "warning"}


def load_yaml(path: Path) -> Any:
    """Parse one YAML file."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    """Return every alerting rule of alerts.yml."""
    groups = load_yaml(RULES)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def run_promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run promtool and capture its output as text."""
    return subprocess.run(
        [require_promtool(), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the rule file."""
    result = run_promtool("check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_rule_unit_tests_pass() -> None:
    """`promtool test rules` passes every unit test of the alerts."""
    result = run_promtool("test", "rules", str(RULE_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_reports_wrong_expectation(tmp_path: Path) -> None:
    """A unit test that expects an alert for a ready task fails, so the harness can fail."""
    (tmp_path / "alerts.yml").write_text(RULES.read_text(encoding="utf-8"), encoding="utf-8")
    wrong = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'sidecar_ready{instance="task-a:9910"}', "values": "1x10"}
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "SidecarNotReady",
                        "exp_alerts": [{"exp_labels": {"instance": "task-a:9910"}}],
                    }
                ],
            }
        ],
    }
    wrong_tests = tmp_path / "wrong.test.yml"
    wrong_tests.write_text(yaml.safe_dump(wrong), encoding="utf-8")

    result = run_promtool("test", "rules", str(wrong_tests))

    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_missing_promtool_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without promtool on PATH, a run with CI set fails and names the Debian package."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")

    with pytest.raises(pytest.fail.Exception, match="Debian's prometheus package"):
        require_promtool()


def test_missing_promtool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without promtool on PATH and without CI, the test is skipped with the package named."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)

    with pytest.raises(pytest.skip.Exception, match="Debian's prometheus package"):
        require_promtool()


def test_required_alerts_present() -> None:
    """The rule file has the four alerts that operators rely on."""
    names = {rule["alert"] for rule in alert_rules()}

    assert {
        "SidecarNotReady",
        "SidecarPollsFailing",
        "SidecarServingStaleKeys",
        "SidecarSecretVersionSplit",
    } <= names


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_operator_annotations(rule: dict[str, Any]) -> None:
    """Every alert has a severity, a `for` duration, a summary and a description."""
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule.get("for")
    assert rule["annotations"]["summary"].strip()
    assert len(rule["annotations"]["description"].split()) >= 20


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_firing_and_quiet_tests(rule: dict[str, Any]) -> None:
    """Each alert has a unit test where it fires and one where it stays quiet."""
    cases = [
        case
        for test in load_yaml(RULE_TESTS)["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == rule["alert"]
    ]

    assert any(case["exp_alerts"] for case in cases), "no case where the alert fires"
    assert any(not case["exp_alerts"] for case in cases), "no case where the alert stays quiet"


def test_rules_select_exported_metrics(
    make_secret: Callable[..., str], start_sidecar: Callable[..., SidecarProcess]
) -> None:
    """Every metric that a rule or its unit tests select is exported by a running sidecar."""
    exported = exported_names(start_sidecar(make_secret(), metrics_port=-1))

    for rule in alert_rules():
        selected = promql_metric_names(rule["expr"])
        assert selected, f"{rule['alert']} selects no metric"
        assert selected <= exported, f"{rule['alert']} selects {selected - exported}"
    for test in load_yaml(RULE_TESTS)["tests"]:
        for series in test["input_series"]:
            assert promql_metric_names(series["series"]) <= exported, series["series"]
