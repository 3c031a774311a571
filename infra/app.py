"""The CDK app: the only place where dev, staging and prod differ.

The CDK command line runs it (``cdk.json`` in this folder) with ``-c environment=dev``,
``staging`` or ``prod``. ``-c app_prefix=NAME`` renames every resource, and
``-c alarm_email=ADDRESS`` subscribes an address to the job notifications. ``infra.synth``
builds the same app without the command line.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from aws_cdk import App, Environment
from aws_cdk import aws_logs as logs

from infra.config import DeploymentConfig, deployment_settings
from infra.stack import PrepflowStack
from prepflow.aws.package import build_bundle
from prepflow.errors import ConfigurationError

DEFAULT_ENVIRONMENT = "dev"
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
_INFRASTRUCTURE = {
    "dev": {
        "retain_data": False,
        "trigger_batch_size": 10,
        "trigger_batching_window_seconds": 0,
        "trigger_reserved_concurrency": 2,
        "log_retention": logs.RetentionDays.ONE_WEEK,
        "access_log_expiration_days": 30,
        "noncurrent_version_expiration_days": 7,
    },
    "staging": {
        "retain_data": False,
        "trigger_batch_size": 10,
        "trigger_batching_window_seconds": 5,
        "trigger_reserved_concurrency": 5,
        "log_retention": logs.RetentionDays.ONE_MONTH,
        "access_log_expiration_days": 90,
        "noncurrent_version_expiration_days": 30,
    },
    "prod": {
        "retain_data": True,
        "trigger_batch_size": 10,
        "trigger_batching_window_seconds": 10,
        "trigger_reserved_concurrency": 10,
        "log_retention": logs.RetentionDays.ONE_YEAR,
        "access_log_expiration_days": 365,
        "noncurrent_version_expiration_days": 90,
    },
}


def deployment_config(
    environment: str, *, app_prefix: str | None = None, alarm_email: str | None = None
) -> DeploymentConfig:
    """Return the configuration of ``environment``, with the prefix and e-mail if given.

    Raises ConfigurationError for an unknown environment or invalid values.
    """
    if environment not in _SETTINGS:
        raise ConfigurationError(
            f"invalid environment {environment!r}: expected one of {', '.join(_SETTINGS)}"
        )
    variables = dict(_SETTINGS[environment])
    if app_prefix:
        variables["APP_PREFIX"] = app_prefix
    return DeploymentConfig(
        environment=environment,
        settings=deployment_settings(variables),
        alarm_email=alarm_email or None,
        **_INFRASTRUCTURE[environment],  # type: ignore[arg-type]
    )


def new_app(outdir: Path | None = None) -> App:
    """Return an app with prepflow's feature flags, writing to ``outdir`` if given."""
    return App(context=FEATURE_FLAGS, outdir=str(outdir) if outdir else None)


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
