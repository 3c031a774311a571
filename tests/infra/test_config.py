"""Deployment configuration: validation and independence from the shell's environment."""

from __future__ import annotations

import pytest
from infra.app import deployment_config
from infra.config import ENVIRONMENTS, MAX_APP_PREFIX_LENGTH, DeploymentConfig

from prepflow.errors import ConfigurationError


def test_unknown_environment_rejected() -> None:
    with pytest.raises(ConfigurationError, match="invalid environment 'qa'"):
        deployment_config("qa")


def test_settings_ignore_shell_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PREFIX", "from-the-shell")
    monkeypatch.setenv("PREPFLOW_INPUT_PREFIX", "elsewhere/")
    settings = deployment_config("dev").settings
    assert settings.app_prefix == "prepflow-dev"
    assert settings.input_prefix == "input/"


def test_app_prefix_override_renames_buckets() -> None:
    settings = deployment_config("staging", app_prefix="acme-ml").settings
    assert settings.buckets.raw == "acme-ml-raw-data-bucket"
    assert settings.trigger_function == "acme-ml-trigger"


def test_invalid_app_prefix_rejected() -> None:
    with pytest.raises(ConfigurationError, match="APP_PREFIX"):
        deployment_config("dev", app_prefix="Not_Valid")


def test_large_batch_needs_window() -> None:
    settings = deployment_config("dev").settings
    with pytest.raises(ConfigurationError, match="trigger_batching_window_seconds"):
        DeploymentConfig(
            environment="dev", settings=settings, retain_data=False, trigger_batch_size=11
        )


def test_batching_window_limit() -> None:
    settings = deployment_config("dev").settings
    with pytest.raises(ConfigurationError, match="expected 0 to 300"):
        DeploymentConfig(
            environment="dev",
            settings=settings,
            retain_data=False,
            trigger_batching_window_seconds=301,
        )


def test_longest_app_prefix_accepted() -> None:
    prefix = "a" * MAX_APP_PREFIX_LENGTH
    settings = deployment_config("dev", app_prefix=prefix).settings
    assert max(len(name) for name in vars(settings.buckets).values()) == 63


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("Acme-ml", "lowercase letters"),
        ("acme_ml", "lowercase letters"),
        ("acme.ml", "lowercase letters"),
        ("1acme", "starting with a letter"),
        ("acme-", "ending with a letter or digit"),
        ("a" * (MAX_APP_PREFIX_LENGTH + 1), f"at most {MAX_APP_PREFIX_LENGTH}"),
        ("sthree-ml", "S3 reserves"),
        ("acme--ml", "single hyphens"),
    ],
)
def test_app_prefix_rules(prefix: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid app prefix") as raised:
        deployment_config("dev", app_prefix=prefix)
    assert repr(prefix) in str(raised.value)
    assert reason in str(raised.value)


def test_alarm_email_per_environment() -> None:
    assert deployment_config("dev").alarm_email is None
    assert deployment_config("staging").alarm_email is not None
    assert deployment_config("prod").alarm_email is not None


def test_alarm_email_override() -> None:
    assert deployment_config("dev", alarm_email="ops@acme.io").alarm_email == "ops@acme.io"
    assert deployment_config("prod", alarm_email="").alarm_email is None


@pytest.mark.parametrize("address", ["ops", "ops@", "@acme.io", "ops@acme", "ops @acme.io"])
def test_invalid_alarm_email_rejected(address: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid alarm e-mail") as raised:
        deployment_config("staging", alarm_email=address)
    assert repr(address) in str(raised.value)


def test_each_environment_has_its_own_job_name_prefix() -> None:
    from infra.app import deployment_config, job_name_prefix_for

    prefixes = {env: deployment_config(env).settings.job_name_prefix for env in ENVIRONMENTS}

    assert prefixes == {"dev": "prepflowdev", "staging": "prepflowstaging", "prod": "prepflowprod"}
    assert deployment_config("dev", app_prefix="team-a").settings.job_name_prefix == "teama"
    long_one = job_name_prefix_for("a-very-long-application-prefix-1")
    other = job_name_prefix_for("a-very-long-application-prefix-2")
    assert len(long_one) == len(other) == 20
    assert long_one != other
    assert long_one.startswith("averylongappl")
