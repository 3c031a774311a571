"""The CDK app: the only place where dev, staging and prod differ.

The CDK command line runs it (``cdk.json`` in this folder) with ``-c environment=dev``,
``staging`` or ``prod``. ``-c app_prefix=NAME`` renames every resource, and
``-c alarm_email=ADDRESS`` replaces the environment's address for alarms and job
notifications, and ``-c alarm_email=`` with no address leaves them without a subscription.
``infra.synth`` builds the same app without the command line.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

from aws_cdk import App, Environment
from aws_cdk import aws_logs as logs

from infra import nag
from infra.config import DeploymentConfig, check_app_prefix, deployment_settings
from infra.stack import PrepflowStack
from prepflow.aws.package import build_bundle
from prepflow.errors import ConfigurationError

DEFAULT_ENVIRONMENT = "dev"
# Maximum length of a job-name prefix that Settings accepts (PREPFLOW_JOB_NAME_PREFIX).
JOB_NAME_PREFIX_LENGTH = 20
# CDK feature flags, set here instead of in cdk.json so that every way of building the app
# (the CDK command line, infra.synth, the tests) gets them. With this one, server access logs
# are allowed by a bucket policy on the logs bucket instead of its ACL, so that bucket keeps
# ACLs disabled (object ownership "bucket owner enforced").
FEATURE_FLAGS = {"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True}

# Per environment: prepflow settings (by their environment variable names) and the values only
# infrastructure needs. Bucket names follow from APP_PREFIX, which must be unique in AWS.
_SETTINGS = {
    "dev": {"APP_PREFIX": "prepflow-dev", "PROCESSING_INSTANCE_TYPE": "ml.t3.medium"},
    "staging": {"APP_PREFIX": "prepflow-staging", "PROCESSING_INSTANCE_TYPE": "ml.m5.large"},
    "prod": {"APP_PREFIX": "prepflow-prod", "PROCESSING_INSTANCE_TYPE": "ml.m5.xlarge"},
}
# The address that receives the alarms and the job notifications. SNS sends it a
# confirmation e-mail at deployment, and nothing arrives before it is confirmed.
# NOTE: the example.com addresses are placeholders that receive nothing: set the team's
# address here, or pass -c alarm_email=ADDRESS.
_ALARM_EMAIL: dict[str, str | None] = {
    "dev": None,
    "staging": "prepflow-staging-alarms@example.com",
    "prod": "prepflow-prod-alarms@example.com",
}
_INFRASTRUCTURE = {
    "dev": {
        "retain_data": False,
        "trigger_batch_size": 10,
        "trigger_batching_window_seconds": 0,
        "trigger_reserved_concurrency": 2,
        "log_retention": logs.RetentionDays.ONE_WEEK,
        "access_log_expiration_days": 30,
        "noncurrent_version_expiration_days": 7,
        "reconcile_schedule_minutes": None,
    },
    "staging": {
        "retain_data": False,
        "trigger_batch_size": 10,
        "trigger_batching_window_seconds": 5,
        "trigger_reserved_concurrency": 5,
        "log_retention": logs.RetentionDays.ONE_MONTH,
        "access_log_expiration_days": 90,
        "noncurrent_version_expiration_days": 30,
        "reconcile_schedule_minutes": 60,
    },
    "prod": {
        "retain_data": True,
        "trigger_batch_size": 10,
        "trigger_batching_window_seconds": 10,
        "trigger_reserved_concurrency": 10,
        "log_retention": logs.RetentionDays.ONE_YEAR,
        "access_log_expiration_days": 365,
        "noncurrent_version_expiration_days": 90,
        "reconcile_schedule_minutes": 60,
    },
}


def deployment_config(
    environment: str, *, app_prefix: str | None = None, alarm_email: str | None = None
) -> DeploymentConfig:
    """Return the configuration of ``environment``, with the prefix and e-mail if given.

    ``alarm_email`` None keeps the environment's address, and an empty string leaves the
    topics without a subscription. Raises ConfigurationError for an unknown environment or
    invalid values.
    """
    if environment not in _SETTINGS:
        raise ConfigurationError(
            f"invalid environment {environment!r}: expected one of {', '.join(_SETTINGS)}"
        )
    variables = dict(_SETTINGS[environment])
    if app_prefix:
        variables["APP_PREFIX"] = app_prefix
    # Checked before the settings, whose message is about bucket names only.
    check_app_prefix(variables["APP_PREFIX"])
    variables["PREPFLOW_JOB_NAME_PREFIX"] = job_name_prefix_for(variables["APP_PREFIX"])
    email = _ALARM_EMAIL[environment] if alarm_email is None else alarm_email
    return DeploymentConfig(
        environment=environment,
        settings=deployment_settings(variables),
        alarm_email=email or None,
        **_INFRASTRUCTURE[environment],  # type: ignore[arg-type]
    )


def job_name_prefix_for(app_prefix: str) -> str:
    """Return the job-name prefix of the deployment named ``app_prefix``.

    Each deployment needs its own: the SageMaker permissions, the state-change rule and
    ``prepflow destroy`` all select jobs by it. A job-name prefix allows 20 letters and
    digits, so a longer app prefix is cut and ends in a hash of the whole.
    """
    letters = "".join(character for character in app_prefix if character.isalnum())
    if len(letters) <= JOB_NAME_PREFIX_LENGTH:
        return letters
    digest = hashlib.sha256(app_prefix.encode()).hexdigest()[:6]
    return letters[: JOB_NAME_PREFIX_LENGTH - len(digest)] + digest


def new_app(outdir: Path | None = None) -> App:
    """Return an app with prepflow's feature flags and cdk-nag's AwsSolutions checks.

    Synthesis fails while any finding is not acknowledged (see infra.nag). The app writes
    to ``outdir`` if given.
    """
    app = App(context=FEATURE_FLAGS, outdir=str(outdir) if outdir else None)
    nag.add_checks(app)
    return app


def add_stack(app: App, config: DeploymentConfig, code: Path) -> PrepflowStack:
    """Add the deployment's stack, named after APP_PREFIX, to ``app``."""
    return PrepflowStack(
        app,
        config.app_prefix,
        config=config,
        code=code,
        description=f"prepflow {config.environment}: event-driven preprocessing of ML data",
        # Set by the CDK command line from the caller's credentials; synthesis works without.
        env=Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        ),
    )


def config_from_context(app: App) -> DeploymentConfig:
    """Return the configuration that the app's ``-c`` context values select."""
    return deployment_config(
        str(app.node.try_get_context("environment") or DEFAULT_ENVIRONMENT),
        app_prefix=app.node.try_get_context("app_prefix"),
        alarm_email=app.node.try_get_context("alarm_email"),
    )


def main() -> int:
    app = new_app()
    config = config_from_context(app)
    with tempfile.TemporaryDirectory(prefix="prepflow-lambda-") as folder:
        code = build_bundle(Path(folder) / "bundle")
        add_stack(app, config, code)
        # Synthesis copies the bundle into the output folder, so the temporary one can go.
        app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
