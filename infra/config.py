"""One deployment's configuration: prepflow's settings plus the values only infrastructure needs.

``app.py`` builds one ``DeploymentConfig`` per environment. Every construct reads its values
from here, so no construct depends on the environment's name.
"""

from __future__ import annotations

import re
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
# Bounds of reconcile_schedule_minutes: EventBridge's rate schedules start at one minute, and
# a reconcile that runs less often than daily leaves lost events unprocessed for too long.
MAX_RECONCILE_SCHEDULE_MINUTES = 24 * 60

# APP_PREFIX names the stack, the buckets, the functions, the roles and the ECR repository,
# so it follows the strictest of their rules: S3 bucket names (lower case, no underscores)
# and CloudFormation stack names (starting with a letter). Dots are left out because they
# break virtual-hosted-style HTTPS access to a bucket.
APP_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
MAX_BUCKET_NAME_LENGTH = 63
# The suffix of the longest bucket name that APP_PREFIX derives (Settings.buckets).
LONGEST_BUCKET_SUFFIX = "-model-artifacts-bucket"
MAX_APP_PREFIX_LENGTH = MAX_BUCKET_NAME_LENGTH - len(LONGEST_BUCKET_SUFFIX)
# S3 rejects bucket names that start with these.
RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
# A plain check that catches typos such as a missing "@" or domain. SNS validates the
# address again, and the owner confirms the subscription by e-mail.
EMAIL_PATTERN = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")


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
    # The address for alarms and job notifications. None leaves the topics without a
    # subscription.
    alarm_email: str | None = None
    # Minutes between scheduled reconcile requests to the trigger function. None turns the
    # schedule off.
    reconcile_schedule_minutes: int | None = None
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

    def __post_init__(self) -> None:
        if self.environment not in ENVIRONMENTS:
            raise ConfigurationError(
                f"invalid environment {self.environment!r}: expected one of {ENVIRONMENTS}"
            )
        check_app_prefix(self.app_prefix)
        if self.alarm_email is not None:
            check_email(self.alarm_email)
        if self.reconcile_schedule_minutes is not None:
            _check_range(
                "reconcile_schedule_minutes",
                self.reconcile_schedule_minutes,
                1,
                MAX_RECONCILE_SCHEDULE_MINUTES,
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


def check_app_prefix(prefix: str) -> None:
    """Raise ConfigurationError unless ``prefix`` can name every resource of a deployment."""
    problem = None
    if not APP_PREFIX_PATTERN.match(prefix):
        problem = (
            "use lowercase letters, digits and hyphens, starting with a letter and ending "
            "with a letter or digit"
        )
    elif len(prefix) > MAX_APP_PREFIX_LENGTH:
        problem = (
            f"it has {len(prefix)} characters, but at most {MAX_APP_PREFIX_LENGTH} keep "
            f"'<prefix>{LONGEST_BUCKET_SUFFIX}' within S3's {MAX_BUCKET_NAME_LENGTH}"
        )
    elif prefix.startswith(RESERVED_BUCKET_PREFIXES):
        problem = f"S3 reserves bucket names starting with {', '.join(RESERVED_BUCKET_PREFIXES)}"
    elif "--" in prefix:
        # S3 also rejects some names with double hyphens ("xn--" and the "--ol-s3" or
        # "--x-s3" suffixes), so every double hyphen is rejected for one simple rule.
        problem = "use single hyphens between words"
    if problem:
        raise ConfigurationError(
            f"invalid app prefix (APP_PREFIX, -c app_prefix) {prefix!r}: {problem}"
        )


def check_email(address: str) -> None:
    """Raise ConfigurationError unless ``address`` looks like an e-mail address."""
    if not EMAIL_PATTERN.match(address):
        raise ConfigurationError(
            f"invalid alarm e-mail (-c alarm_email) {address!r}: expected an address such as "
            "team@example.com, or an empty value for no subscription"
        )


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigurationError(f"invalid {name} {value!r}: expected {low} to {high}")
