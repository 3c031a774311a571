"""Parts both Lambda functions share: the runtime, the code, the environment and the role."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import nag
from infra.config import DeploymentConfig, env_name
from infra.storage import Storage
from prepflow.aws.package import LAMBDA_PYTHON_VERSION

# The runtime the bundle is built for (prepflow.aws.package builds for LAMBDA_PYTHON_VERSION
# on manylinux2014_x86_64 by default), so the architecture is x86_64 as well.
RUNTIME = lambda_.Runtime(f"python{LAMBDA_PYTHON_VERSION}", lambda_.RuntimeFamily.PYTHON)
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
    "batch_max_objects",
    "marker",
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
        if getattr(settings, field) not in (None, "")
    }
    environment[env_name("input_suffixes")] = ",".join(settings.input_suffixes)
    # The queue's batching window collects the objects of one job, so a window above 0 puts
    # the trigger function in per-batch mode; it reads only whether the value is above 0.
    environment[env_name("batch_window_seconds")] = str(config.trigger_batching_window_seconds)
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
    """Return a function of prepflow's bundle with its own log group and role.

    The log group is kept as long as the data. The role may write to that log group and
    nothing else. The caller grants the rest.
    """
    log_group = logs.LogGroup(
        scope,
        f"{construct_id}Logs",
        log_group_name=f"/aws/lambda/{function_name}",
        retention=config.log_retention,
        removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
    )
    role = function_role(scope, f"{construct_id}Role", function_name)
    function = lambda_.Function(
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
        role=role,
        **options,  # type: ignore[arg-type]
    )
    nag.acknowledge(
        function,
        "AwsSolutions-L1",
        f"The bundle is built for Python {LAMBDA_PYTHON_VERSION} (prepflow.aws.package), the "
        "runtime the deployment is specified for; a newer runtime needs a bundle built for it",
    )
    return function


def function_role(scope: Construct, construct_id: str, function_name: str) -> iam.Role:
    """Return a role that Lambda assumes for ``function_name`` and that may only write its logs.

    It replaces the role that ``lambda_.Function`` would create with the AWS managed policy
    AWSLambdaBasicExecutionRole, which allows writing to every log group of the account.
    """
    role = iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"Execution role of the Lambda function {function_name}",
    )
    # The log group exists before the function (the stack creates it), so the role needs no
    # logs:CreateLogGroup. The ":*" covers the group's log streams.
    log_group_arn = Stack.of(scope).format_arn(
        service="logs",
        resource="log-group",
        resource_name=f"/aws/lambda/{function_name}:*",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group_arn]
        )
    )
    nag.acknowledge_wildcards(
        role,
        [nag.log_group_pattern(f"/aws/lambda/{function_name}")],
        "Lambda names a new log stream per execution environment; the wildcard covers only "
        "the streams of this function's own log group",
        kind="Resource",
    )
    return role
