"""One deployment's configuration: prepflow's settings plus the values only infrastructure needs.

``app.py`` builds one ``DeploymentConfig`` per environment. Every construct reads its values
from here, so no construct depends on the environment's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_logs as logs
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from prepflow.errors import ConfigurationError
from prepflow.settings import Settings

ENVIRONMENTS = ("dev", "staging", "prod")

# Lambda limits, from the Lambda Developer Guide ("Using Lambda with Amazon SQS"): a standard
# queue delivers at most 10,000 messages per batch, a batch of more than 10 needs a batching
# window, and the window is at most 300 seconds. A function runs at most 900 seconds.
MAX_SQS_BATCH_SIZE = 10_000
MAX_BATCHING_WINDOW_SECONDS = 300
MAX_FUNCTION_TIMEOUT_SECONDS = 900


class DeploymentSettings(Settings):
    """prepflow's ``Settings`` read from the given values alone, never from the environment.

    A synthesized template then depends on ``app.py`` only, not on the variables of the shell
    that runs the synthesis.
    """

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def env_name(field_name: str) -> str:
    """Return the environment variable that sets the ``Settings`` field ``field_name``."""
    alias = Settings.model_fields[field_name].validation_alias
    choices = getattr(alias, "choices", None)
    return str(choices[0] if choices else alias)


@dataclass(frozen=True, kw_only=True)
class DeploymentConfig:
    """Values that differ between deployments, and the settings both functions run with."""

    environment: str
    settings: Settings
    # RETAIN for buckets and the table when true; otherwise they are deleted with the stack
    # (the buckets only once empty, which `prepflow destroy` takes care of).
    retain_data: bool
    alarm_email: str | None = None
    # The trigger function's SQS event source and concurrency.
    trigger_batch_size: int = 10
    trigger_batching_window_seconds: int = 0
    trigger_reserved_concurrency: int = 5
    trigger_timeout_seconds: int = 120
    job_state_timeout_seconds: int = 60
    # Deliveries of one message before SQS moves it to the dead-letter queue.
    max_receive_count: int = 5
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    # Server access logs under access-logs/ in the logs bucket expire after this many days,
    # and so do noncurrent versions in the versioned raw-data bucket.
    access_log_expiration_days: int = 90
    noncurrent_version_expiration_days: int = 30
    # Tag of the processing image in the deployment's ECR repository, used when the settings
    # name neither PROCESSING_IMAGE_URI nor a step script.
    processing_image_tag: str = "latest"

    def __post_init__(self) -> None:
        if self.environment not in ENVIRONMENTS:
            raise ConfigurationError(
                f"invalid environment {self.environment!r}: expected one of {ENVIRONMENTS}"
            )
        _check_range("trigger_batch_size", self.trigger_batch_size, 1, MAX_SQS_BATCH_SIZE)
        _check_range(
            "trigger_batching_window_seconds",
            self.trigger_batching_window_seconds,
            0,
            MAX_BATCHING_WINDOW_SECONDS,
        )
        if self.trigger_batch_size > 10 and self.trigger_batching_window_seconds == 0:
            raise ConfigurationError(
                f"invalid trigger_batch_size {self.trigger_batch_size}: a batch of more than 10 "
                "messages needs trigger_batching_window_seconds of at least 1"
            )
        _check_range("trigger_reserved_concurrency", self.trigger_reserved_concurrency, 1, 1000)
        for name in ("trigger_timeout_seconds", "job_state_timeout_seconds"):
            _check_range(name, getattr(self, name), 1, MAX_FUNCTION_TIMEOUT_SECONDS)
        _check_range("max_receive_count", self.max_receive_count, 1, 1000)

    @property
    def app_prefix(self) -> str:
        return self.settings.app_prefix


def deployment_settings(variables: Mapping[str, Any]) -> Settings:
    """Validate prepflow settings given by their environment variable names.

    Raises ConfigurationError naming the invalid variable, as ``load_settings`` does.
    """
    try:
        return DeploymentSettings(**variables)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ConfigurationError(f"invalid deployment settings: {problems}") from error


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigurationError(f"invalid {name} {value!r}: expected {low} to {high}")
