"""Settings: defaults, every invalid value reported clearly, and the check-config command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.errors import SettingsError
from sidecar.settings import KNOWN_VARIABLES, Settings, load_rotation_settings, load_settings
from tests.helpers import base_environment
from tools.emulator import client_environment

TOKEN_VALUE = "settings-test-token-0123456789"
MINIMAL = {"SIDECAR_SECRET_ID": "jwt-service/api-keys", "SIDECAR_TOKEN": TOKEN_VALUE}


def problems_for(**variables: str) -> list[str]:
    """Return the problems load_settings reports for MINIMAL plus ``variables``."""
    environ = {**MINIMAL, **variables}
    with pytest.raises(SettingsError) as raised:
        load_settings(environ)
    return list(raised.value.problems)


def test_defaults() -> None:
    """Only the secret id and a token are needed; the rest has documented defaults."""
    settings = load_settings(MINIMAL)

    assert settings.poll_interval == 60
    assert settings.poll_jitter == pytest.approx(0.1)
    assert settings.backoff_initial == 1
    assert settings.backoff_max == 60
    assert settings.current_field == "API_KEY_CURRENT"
    assert settings.previous_field == "API_KEY_PREVIOUS"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8910
    assert settings.require_token is True
    assert settings.max_staleness == 0
    assert settings.log_level == "info"
    assert settings.log_format == "json"
    assert settings.layout == "fields"


def test_fractional_interval_accepted() -> None:
    """Poll intervals may have fractions."""
    settings = load_settings({**MINIMAL, "SIDECAR_POLL_INTERVAL": "1.5"})

    assert settings.poll_interval == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("SIDECAR_POLL_INTERVAL", "0.5", "seconds from 1 to 86400"),
        ("SIDECAR_POLL_INTERVAL", "ten", "seconds from 1 to 86400"),
        ("SIDECAR_POLL_INTERVAL", "nan", "seconds from 1 to 86400"),
        ("SIDECAR_POLL_JITTER", "0.9", "a fraction from 0 to 0.5"),
        ("SIDECAR_POLL_JITTER", "-0.1", "a fraction from 0 to 0.5"),
        ("SIDECAR_BACKOFF_INITIAL", "0", "seconds greater than 0"),
        ("SIDECAR_BACKOFF_MAX", "1e9", "at most 3600"),
        ("SIDECAR_PORT", "70000", "an integer port from 1 to 65535"),
        ("SIDECAR_PORT", "80a", "an integer port from 1 to 65535"),
        ("SIDECAR_PORT", "\u00b2", "an integer port from 1 to 65535"),
        ("SIDECAR_PORT", "\u0668\u0669\u0661\u0660", "an integer port from 1 to 65535"),
        ("SIDECAR_MAX_CONNECTIONS", "1.5", "an integer from 1 to 100000"),
        ("SIDECAR_MAX_CONNECTIONS", "1e3", "an integer from 1 to 100000"),
        ("SIDECAR_METRICS_PORT", "-1", "(0 turns it off)"),
        ("SIDECAR_HOST", "localhost", "an IPv4 or IPv6 address"),
        ("SIDECAR_REQUIRE_TOKEN", "maybe", "true or false"),
        ("SIDECAR_LOG_LEVEL", "verbose", "one of debug, info, warning, error"),
        ("SIDECAR_LOG_FORMAT", "xml", "one of json, console"),
        ("SIDECAR_MAX_STALENESS", "-5", "seconds from 0 (off)"),
        ("SIDECAR_SECRET_ID", "bad name with spaces", "a secret name or ARN"),
        ("SIDECAR_CURRENT_FIELD", "tab\there", "a JSON field name"),
        ("SIDECAR_LAYOUT", "rows", "fields (the pair as two JSON fields"),
    ],
)
def test_invalid_value_reported(variable: str, value: str, accepted: str) -> None:
    """A bad value gets one message naming the variable, the value and what is accepted."""
    problems = problems_for(**{variable: value})

    assert len(problems) == 1
    assert problems[0].startswith(f"{variable}: invalid value {value!r}")
    assert accepted in problems[0]


def test_all_problems_reported_together() -> None:
    """Several bad settings are reported in one run, one message each."""
    problems = problems_for(SIDECAR_POLL_INTERVAL="0", SIDECAR_PORT="0", SIDECAR_LOG_LEVEL="loud")

    assert len(problems) == 3


def test_missing_secret_id() -> None:
    """SIDECAR_SECRET_ID is required and its message states what it must contain."""
    with pytest.raises(SettingsError) as raised:
        load_settings({"SIDECAR_TOKEN": TOKEN_VALUE})

    expected = (
        "SIDECAR_SECRET_ID: missing; expected the name or ARN of the Secrets Manager "
        "secret that holds the key pair"
    )
    assert raised.value.problems == (expected,)


def test_unknown_variable_suggests_name() -> None:
    """A misspelt SIDECAR_ variable is rejected with the closest known name."""
    problems = problems_for(SIDECAR_POLL_INTERVALL="5")

    assert problems == [
        "SIDECAR_POLL_INTERVALL: unknown setting; did you mean SIDECAR_POLL_INTERVAL?"
    ]


def test_token_required_by_default() -> None:
    """With no token source and REQUIRE_TOKEN left on, the message explains how to set one."""
    with pytest.raises(SettingsError) as raised:
        load_settings({"SIDECAR_SECRET_ID": "s"})

    message = raised.value.problems[0]
    assert "SIDECAR_TOKEN_FILE" in message
    assert "SIDECAR_TOKEN" in message
    assert "SIDECAR_REQUIRE_TOKEN=false" in message


def test_token_optional_when_not_required() -> None:
    """SIDECAR_REQUIRE_TOKEN=false allows running without a token."""
    settings = load_settings({"SIDECAR_SECRET_ID": "s", "SIDECAR_REQUIRE_TOKEN": "false"})

    assert settings.token is None


def test_short_token_rejected_without_echo() -> None:
    """An invalid token is reported by length only; its value never appears."""
    token = "short-secret"
    problems = problems_for(SIDECAR_TOKEN=token)

    expected = (
        "SIDECAR_TOKEN: invalid value (hidden, 12 characters); expected 16 to 512 visible "
        "ASCII characters (no spaces), for example the output of `sidecar keygen`"
    )
    assert problems == [expected]
    assert token not in problems[0]


def test_token_and_token_file_exclusive() -> None:
    """Setting both token sources is ambiguous and rejected."""
    problems = problems_for(SIDECAR_TOKEN_FILE="/tmp/token")  # noqa: S108 - never opened

    assert problems == [
        "SIDECAR_TOKEN and SIDECAR_TOKEN_FILE are both set; expected only one of them"
    ]


def test_backoff_order_checked() -> None:
    """BACKOFF_INITIAL above BACKOFF_MAX is a cross-field error."""
    problems = problems_for(SIDECAR_BACKOFF_INITIAL="30", SIDECAR_BACKOFF_MAX="10")

    assert len(problems) == 1
    assert "expected BACKOFF_INITIAL <= BACKOFF_MAX" in problems[0]


def test_same_field_names_rejected() -> None:
    """The current and previous fields must differ."""
    problems = problems_for(SIDECAR_PREVIOUS_FIELD="API_KEY_CURRENT")

    assert len(problems) == 1
    assert "expected two different JSON field names" in problems[0]


def test_max_staleness_must_exceed_poll_wait() -> None:
    """A staleness limit shorter than the longest poll wait would flap readiness."""
    problems = problems_for(SIDECAR_POLL_INTERVAL="10", SIDECAR_MAX_STALENESS="10.5")

    assert len(problems) == 1
    assert "= 11 seconds" in problems[0]


def test_non_loopback_host_needs_opt_in() -> None:
    """Binding the keys API beyond loopback needs SIDECAR_ALLOW_NON_LOOPBACK=true."""
    problems = problems_for(SIDECAR_HOST="0.0.0.0")
    settings = load_settings(
        {**MINIMAL, "SIDECAR_HOST": "0.0.0.0", "SIDECAR_ALLOW_NON_LOOPBACK": "true"}
    )

    assert len(problems) == 1
    assert "SIDECAR_ALLOW_NON_LOOPBACK=true" in problems[0]
    assert settings.host == "0.0.0.0"


def test_ipv6_loopback_accepted() -> None:
    """::1 is a loopback address for the keys listener."""
    assert load_settings({**MINIMAL, "SIDECAR_HOST": "::1"}).host == "::1"


def test_metrics_port_clash_rejected() -> None:
    """The metrics listener cannot share the keys port."""
    problems = problems_for(SIDECAR_METRICS_PORT="8910")

    assert len(problems) == 1
    assert "SIDECAR_METRICS_PORT: 8910 is also SIDECAR_PORT" in problems[0]


def test_repr_masks_token() -> None:
    """repr() and describe() of the settings never show the token."""
    settings = load_settings(MINIMAL)
    described = dict(settings.describe())

    assert TOKEN_VALUE not in repr(settings)
    assert described["SIDECAR_TOKEN"] == "(set, hidden)"
    assert set(described) == KNOWN_VARIABLES


def test_rotation_settings_ignore_sidecar_only_variables() -> None:
    """load_rotation_settings reads its own variables and ignores the rest, typos included."""
    settings = load_rotation_settings(
        {"SIDECAR_POLL_INTERVAL": "5", "SIDECAR_LAYOUT": "stages", "SIDECAR_PORTT": "1"}
    )

    assert settings.poll_interval == 5
    assert settings.poll_jitter == pytest.approx(0.1)
    assert settings.layout == "stages"
    assert settings.current_field == "API_KEY_CURRENT"


def test_rotation_settings_same_fields_rejected() -> None:
    """load_rotation_settings rejects equal field names like load_settings does."""
    with pytest.raises(SettingsError) as raised:
        load_rotation_settings({"SIDECAR_CURRENT_FIELD": "key", "SIDECAR_PREVIOUS_FIELD": "key"})

    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith("SIDECAR_PREVIOUS_FIELD: 'key' is the same")


def test_every_variable_is_a_field() -> None:
    """Each known variable maps to one Settings field."""
    names = {name.removeprefix("SIDECAR_").lower() for name in KNOWN_VARIABLES}

    assert names == set(Settings.__dataclass_fields__)


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sidecar`` with ``env`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        env=base_environment(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )


def test_invalid_settings_exit_2(tmp_path: Path) -> None:
    """The process exits with status 2 and one line per bad setting, before binding."""
    env = {
        "SIDECAR_POLL_INTERVAL": "0",
        "SIDECAR_TOKEN": "x",
        **client_environment("http://127.0.0.1:9"),
    }

    result = run_cli(env=env, cwd=tmp_path)
    lines = result.stderr.splitlines()

    assert result.returncode == 2
    assert lines[0].startswith("sidecar: SIDECAR_SECRET_ID: missing")
    assert lines[1].startswith("sidecar: SIDECAR_POLL_INTERVAL: invalid value '0'")
    assert lines[2].startswith("sidecar: SIDECAR_TOKEN: invalid value (hidden, 1 characters)")
    assert lines[3] == "sidecar: 3 invalid settings; not started"
    assert result.stdout == ""


def test_missing_region_exit_2(tmp_path: Path) -> None:
    """Without a region botocore cannot build a client, so start-up stops with a clear message."""
    env = {**MINIMAL, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    result = run_cli(env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "AWS_REGION: missing" in result.stderr


def test_check_config_prints_masked_values(tmp_path: Path) -> None:
    """check-config prints every effective setting with the token masked and exits 0."""
    env = {**MINIMAL, "SIDECAR_POLL_INTERVAL": "15", **client_environment("http://127.0.0.1:9")}

    result = run_cli("check-config", env=env, cwd=tmp_path)

    assert result.returncode == 0
    assert TOKEN_VALUE not in result.stdout
    assert "SIDECAR_TOKEN" in result.stdout
    assert "(set, hidden)" in result.stdout
    assert "SIDECAR_POLL_INTERVAL" in result.stdout
    assert "15.0" in result.stdout
    assert "us-east-1" in result.stdout
    assert result.stdout.rstrip().endswith("settings are valid")


def test_check_config_invalid_exit_2(tmp_path: Path) -> None:
    """check-config with a bad setting exits 2 with the same messages as a start."""
    env = {**MINIMAL, "SIDECAR_LOG_FORMAT": "yaml", **client_environment("http://127.0.0.1:9")}

    result = run_cli("check-config", env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert (
        "SIDECAR_LOG_FORMAT: invalid value 'yaml'; expected one of json, console" in result.stderr
    )


def test_check_config_rejects_bad_token_file(tmp_path: Path) -> None:
    """check-config fails like a start would when the token file cannot be used."""
    cases = {
        "a directory": tmp_path,
        "a device": Path("/dev/zero"),
        "a short token": tmp_path / "short",
        "a missing directory": tmp_path / "missing" / "token",
    }
    (tmp_path / "short").write_text("short\n")
    for case, path in cases.items():
        env = {
            "SIDECAR_SECRET_ID": "s",
            "SIDECAR_TOKEN_FILE": str(path),
            **client_environment("http://127.0.0.1:9"),
        }

        result = run_cli("check-config", env=env, cwd=tmp_path)

        assert result.returncode == 2, case
        assert "SIDECAR_TOKEN_FILE" in result.stderr, case
        assert "settings are valid" not in result.stdout, case


def test_check_config_writes_no_token_file(tmp_path: Path) -> None:
    """check-config accepts a token file that a start would create, without creating it."""
    token_file = tmp_path / "token"
    env = {
        "SIDECAR_SECRET_ID": "s",
        "SIDECAR_TOKEN_FILE": str(token_file),
        **client_environment("http://127.0.0.1:9"),
    }

    result = run_cli("check-config", env=env, cwd=tmp_path)

    assert result.returncode == 0
    assert not token_file.exists()


def test_aws_region_alone_is_enough(tmp_path: Path) -> None:
    """AWS_REGION, which ECS sets and botocore ignores, is used when AWS_DEFAULT_REGION is unset."""
    env = {**MINIMAL, **client_environment("http://127.0.0.1:9")}
    del env["AWS_DEFAULT_REGION"]
    env["AWS_REGION"] = "eu-west-3"

    result = run_cli("check-config", env=env, cwd=tmp_path)

    assert result.returncode == 0
    assert "eu-west-3" in result.stdout


def test_output_file_through_link_is_token_file(tmp_path: Path) -> None:
    """An output path that reaches the token file through a symbolic link is rejected."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    environ = {
        "SIDECAR_SECRET_ID": "s",
        "SIDECAR_TOKEN_FILE": str(tmp_path / "real" / "token"),
        "SIDECAR_OUTPUT_FILE": str(tmp_path / "link" / "token"),
    }

    with pytest.raises(SettingsError) as raised:
        load_settings(environ)

    assert len(raised.value.problems) == 1
    assert "is also SIDECAR_TOKEN_FILE" in raised.value.problems[0]
