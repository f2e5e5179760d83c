"""IAM policies in deploy/iam: parliament finds nothing, and each grants only what it must."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_files import ROTATION_POLICY, TASK_ROLE_POLICY, load_json, venv_tool

SECRET_ARN_SUFFIX = "-??????"
TASK_ROLE_ACTIONS = {"secretsmanager:GetSecretValue", "kms:Decrypt"}
ROTATION_SECRET_ACTIONS = {
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
}
ROTATION_KMS_ACTIONS = {"kms:Decrypt", "kms:GenerateDataKey"}
ROTATION_LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}


def parliament_findings(policy_text: str) -> list[dict[str, Any]]:
    """Run the parliament CLI on one policy and return its findings, INFO severity included."""
    # parliament reads the policy from stdin whenever stdin is not a terminal.
    result = subprocess.run(
        [
            str(venv_tool("parliament")),
            "--include-community-auditors",
            "--minimum_severity",
            "INFO",
            "--json",
        ],
        input=policy_text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in {0, 1}, f"parliament failed: {result.stderr}"
    findings = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert (result.returncode == 1) == bool(findings), result.stdout + result.stderr
    return findings


@pytest.mark.parametrize("path", [TASK_ROLE_POLICY, ROTATION_POLICY], ids=lambda path: path.name)
def test_parliament_finds_nothing(path: Path) -> None:
    assert parliament_findings(path.read_text(encoding="utf-8")) == []


def test_parliament_flags_loose_policy() -> None:
    """A loose policy gets findings, so the empty result above means something."""
    loose = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:ViaServic": "secretsmanager.us-east-1.amazonaws.com"}
                },
            },
        ],
    }
    issues = {finding["issue"] for finding in parliament_findings(json.dumps(loose))}
    assert "RESOURCE_STAR" in issues
    assert "UNKNOWN_CONDITION_FOR_ACTION" in issues


def statements(path: Path) -> list[dict[str, Any]]:
    document = load_json(path)
    assert document["Version"] == "2012-10-17"
    found: list[dict[str, Any]] = document["Statement"]
    for statement in found:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement
        assert "NotResource" not in statement
    return found


def actions(statement: dict[str, Any]) -> set[str]:
    listed = statement["Action"]
    return {listed} if isinstance(listed, str) else set(listed)


def resources(statement: dict[str, Any]) -> list[str]:
    listed = statement["Resource"]
    return [listed] if isinstance(listed, str) else list(listed)


def statement_with(found: list[dict[str, Any]], expected_actions: set[str]) -> dict[str, Any]:
    matches = [statement for statement in found if actions(statement) == expected_actions]
    assert len(matches) == 1, f"expected one statement with exactly {sorted(expected_actions)}"
    return matches[0]


def assert_one_secret(statement: dict[str, Any]) -> None:
    """The statement names one secret by ARN, with the wildcard for its random suffix."""
    (arn,) = resources(statement)
    assert arn.startswith("arn:aws:secretsmanager:")
    assert arn.endswith(SECRET_ARN_SUFFIX)
    assert "*" not in arn


def assert_customer_key_via_secrets_manager(statement: dict[str, Any]) -> None:
    """The statement names one customer-managed key, usable only through Secrets Manager."""
    (arn,) = resources(statement)
    _, _, service, region, account, key = arn.split(":", 5)
    assert service == "kms"
    assert account.isdigit()
    # A key ID, not an alias: aws/secretsmanager is an AWS-managed key that needs no grant.
    assert key.startswith("key/")
    assert "*" not in key
    assert statement["Condition"] == {
        "StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}
    }


def test_task_role_reads_one_secret() -> None:
    found = statements(TASK_ROLE_POLICY)
    granted = set().union(*(actions(statement) for statement in found))
    assert granted == TASK_ROLE_ACTIONS
    assert_one_secret(statement_with(found, {"secretsmanager:GetSecretValue"}))
    assert_customer_key_via_secrets_manager(statement_with(found, {"kms:Decrypt"}))


def test_rotation_policy_grants_rotation_only() -> None:
    found = statements(ROTATION_POLICY)
    assert len(found) == 3
    assert_one_secret(statement_with(found, ROTATION_SECRET_ACTIONS))
    assert_customer_key_via_secrets_manager(statement_with(found, ROTATION_KMS_ACTIONS))
    (log_streams,) = resources(statement_with(found, ROTATION_LOG_ACTIONS))
    assert log_streams.startswith("arn:aws:logs:")
    assert ":log-group:/aws/lambda/" in log_streams


def test_policies_share_secret_and_key() -> None:
    task_role = statements(TASK_ROLE_POLICY)
    rotation = statements(ROTATION_POLICY)
    assert resources(statement_with(task_role, {"secretsmanager:GetSecretValue"})) == resources(
        statement_with(rotation, ROTATION_SECRET_ACTIONS)
    )
    assert resources(statement_with(task_role, {"kms:Decrypt"})) == resources(
        statement_with(rotation, ROTATION_KMS_ACTIONS)
    )
