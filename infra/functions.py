"""Parts both Lambda functions share: the runtime, the code folder and the environment."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import DeploymentConfig, env_name
from infra.storage import Storage

# The runtime the bundle is built for (prepflow.aws.package builds for Python 3.13 on
# manylinux2014_x86_64 by default), so the architecture is x86_64 as well.
RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.X86_64
MEMORY_MB = 512

# Settings copied unchanged from the deployment's configuration into both functions.
_COPIED_FIELDS = (
    "app_prefix",
    "processing_instance_type",
    "processing_instance_count",
    "sklearn_version",
    "log_level",
    "output_prefix",
    "input_prefix",
    "job_name_prefix",
    "max_runtime_seconds",
    "volume_size_gb",
    "submit_attempts",
    "step_script_uri",
    "recipe_uri",
)


def runtime_environment(
    config: DeploymentConfig, *, storage: Storage, role_arn: str, image_uri: str | None
) -> dict[str, str]:
    """Return the variables both functions need, except the job table's and the topic's."""
    settings = config.settings
    environment = {
        env_name(field): str(getattr(settings, field))
        for field in _COPIED_FIELDS
        if getattr(settings, field) is not None
    }
    environment[env_name("input_suffixes")] = ",".join(settings.input_suffixes)
    environment[env_name("sagemaker_role_arn")] = role_arn
    if image_uri is not None:
        environment[env_name("processing_image_uri")] = image_uri
    # The names equal what APP_PREFIX derives; setting them keeps the functions right even if
    # a bucket is renamed here.
    environment[env_name("raw_bucket")] = storage.raw.bucket_name
    environment[env_name("processed_bucket")] = storage.processed.bucket_name
    environment[env_name("model_artifacts_bucket")] = storage.model_artifacts.bucket_name
    environment[env_name("logs_bucket")] = storage.logs.bucket_name
    environment[env_name("feature_store_bucket")] = storage.feature_store.bucket_name
    return environment


def python_function(
    scope: Construct,
    construct_id: str,
    *,
    config: DeploymentConfig,
    function_name: str,
    handler: str,
    code: Path,
    environment: dict[str, str],
    timeout_seconds: int,
    **options: object,
) -> lambda_.Function:
    """Return a function of prepflow's bundle with its own log group, kept as long as the data."""
    log_group = logs.LogGroup(
        scope,
        f"{construct_id}Logs",
        log_group_name=f"/aws/lambda/{function_name}",
        retention=config.log_retention,
        removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
    )
    return lambda_.Function(
        scope,
        construct_id,
        function_name=function_name,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        handler=handler,
        code=lambda_.Code.from_asset(str(code)),
        environment=environment,
        timeout=Duration.seconds(timeout_seconds),
        memory_size=MEMORY_MB,
        log_group=log_group,
        **options,  # type: ignore[arg-type]
    )
