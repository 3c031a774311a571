"""Deployment configuration: validation and independence from the shell's environment."""

from __future__ import annotations

import pytest
from infra.app import deployment_config
from infra.config import DeploymentConfig

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
