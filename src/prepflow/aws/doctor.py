"""``prepflow doctor --target aws``: check that a deployment can run jobs, and print how to fix it.

Each check reads one part of the deployment with the caller's credentials and never changes
anything. A check that cannot run because an earlier one failed (no credentials, no
function) is reported as skipped, with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from prepflow.jobs.spec import ROLE_ARN_PATTERN
from prepflow.settings import Settings
from prepflow.storage.base import parse_s3_uri

# How to deploy until the command line wraps it: the CDK app in infra/, with its pinned CLI.
DEPLOY_HINT = "cd infra && npx cdk deploy -c environment=dev"
# The Lambda variables the reference deployment names, and prepflow's own that the trigger
# function needs to find its table.
REQUIRED_VARIABLES = (
    "APP_PREFIX",
    "PROCESSING_INSTANCE_TYPE",
    "PROCESSING_INSTANCE_COUNT",
    "SKLEARN_VERSION",
    "SAGEMAKER_ROLE_ARN",
    "LOG_LEVEL",
    "PREPFLOW_JOBS_TABLE",
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok", "problem" or "skipped"
    detail: str
    fix: str = ""


class _Doctor:
    def __init__(self, settings: Settings, client: Callable[[str], Any]) -> None:
        self.settings = settings
        self.client = client
        self.checks: list[Check] = []
        self.function_env: dict[str, str] | None = None

    def ok(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "ok", detail))

    def problem(self, name: str, detail: str, fix: str) -> None:
        self.checks.append(Check(name, "problem", detail, fix))

    def skipped(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "skipped", detail))

    def run(self) -> list[Check]:
        if not self.credentials():
            for name in ("buckets", "trigger", "job table", "function", "role", "step"):
                self.skipped(name, "no usable AWS credentials")
            return self.checks
        self.buckets()
        self.trigger()
        self.job_table()
        self.function()
        self.role()
        self.step()
        return self.checks

    def credentials(self) -> bool:
        try:
            identity = self.client("sts").get_caller_identity()
        except (ClientError, BotoCoreError) as error:
            self.problem(
                "credentials",
                f"cannot call AWS: {error}",
                "configure credentials (aws configure, AWS_PROFILE or the AWS_* variables) and "
                "AWS_REGION for the deployment's region",
            )
            return False
        self.ok("credentials", f"account {identity['Account']}, region {self.settings.region}")
        return True

    def buckets(self) -> None:
        s3 = self.client("s3")
        missing = []
        for bucket in vars(self.settings.buckets).values():
            try:
                s3.head_bucket(Bucket=bucket)
            except ClientError as error:
                missing.append(f"{bucket} ({_code(error)})")
        if missing:
            self.problem(
                "buckets",
                f"missing or not readable: {', '.join(missing)}",
                f"deploy the stack ({DEPLOY_HINT}), or set APP_PREFIX or the "
                "PREPFLOW_*_BUCKET variables to the deployment's names",
            )
        else:
            self.ok("buckets", "all five buckets exist")

    def trigger(self) -> None:
        raw = self.settings.buckets.raw
        try:
            notification = self.client("s3").get_bucket_notification_configuration(Bucket=raw)
        except ClientError as error:
            self.skipped("trigger", f"cannot read the notification settings of {raw}: {error}")
            return
        if "EventBridgeConfiguration" not in notification:
            self.problem(
                "trigger",
                f"bucket {raw} does not send its events to EventBridge",
                "turn on 'Send notifications to Amazon EventBridge' for the raw bucket "
                f"(the stack does this: {DEPLOY_HINT})",
            )
            return
        rules = self._rules_for_bucket(raw)
        if not rules:
            self.problem(
                "trigger",
                f"no EventBridge rule with a target matches 'Object Created' in {raw}",
                "deploy the stack, which adds the rule that feeds the trigger queue "
                f"({DEPLOY_HINT})",
            )
            return
        self.ok("trigger", f"{raw} -> EventBridge rule(s) {', '.join(rules)}")

    def _rules_for_bucket(self, bucket: str) -> list[str]:
        events = self.client("events")
        found = []
        for page in events.get_paginator("list_rules").paginate():
            for rule in page.get("Rules", []):
                pattern = _json(rule.get("EventPattern"))
                if not _matches_object_created(pattern, bucket):
                    continue
                targets = events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", [])
                if targets:
                    found.append(rule["Name"])
        return found

    def job_table(self) -> None:
        table = self.settings.table_name
        try:
            status = self.client("dynamodb").describe_table(TableName=table)["Table"]["TableStatus"]
        except ClientError as error:
            self.problem(
                "job table",
                f"table {table}: {_code(error)}",
                f"deploy the stack ({DEPLOY_HINT}), or set PREPFLOW_JOBS_TABLE to the "
                "deployment's table",
            )
            return
        if status != "ACTIVE":
            self.problem("job table", f"table {table} is {status}", "wait until it is ACTIVE")
        else:
            self.ok("job table", f"{table} is ACTIVE")

    def function(self) -> None:
        name = self.settings.trigger_function
        try:
            configuration = self.client("lambda").get_function_configuration(FunctionName=name)
        except ClientError as error:
            self.problem(
                "function",
                f"trigger function {name}: {_code(error)}",
                f"deploy the stack ({DEPLOY_HINT}), or set PREPFLOW_TRIGGER_FUNCTION to the "
                "function's name",
            )
            return
        variables = configuration.get("Environment", {}).get("Variables", {})
        self.function_env = variables
        missing = [name for name in REQUIRED_VARIABLES if not variables.get(name)]
        if missing:
            self.problem(
                "function",
                f"{name} lacks the variables {', '.join(missing)}",
                f"set them on the function (the stack sets them: {DEPLOY_HINT})",
            )
        else:
            self.ok("function", f"{name}: configuration complete")

    def role(self) -> None:
        arn = (self.function_env or {}).get(
            "SAGEMAKER_ROLE_ARN"
        ) or self.settings.sagemaker_role_arn
        if not arn:
            self.skipped("role", "no SAGEMAKER_ROLE_ARN on the function or in the environment")
            return
        if not ROLE_ARN_PATTERN.match(arn):
            self.problem(
                "role", f"{arn!r} is not an IAM role ARN", "set SAGEMAKER_ROLE_ARN to a role ARN"
            )
            return
        role_name = arn.rsplit("/", 1)[-1]
        try:
            role = self.client("iam").get_role(RoleName=role_name)["Role"]
        except ClientError as error:
            self.problem(
                "role",
                f"{arn}: {_code(error)}",
                "create the role or point SAGEMAKER_ROLE_ARN at the stack's processing role",
            )
            return
        policy = _json(role.get("AssumeRolePolicyDocument"))
        if "sagemaker.amazonaws.com" not in json.dumps(policy):
            self.problem(
                "role",
                f"{arn} cannot be assumed by SageMaker",
                "add sagemaker.amazonaws.com as a trusted principal of the role",
            )
        else:
            self.ok("role", f"{arn} exists and SageMaker may assume it")

    def step(self) -> None:
        variables = self.function_env or {}
        script = variables.get("PREPFLOW_STEP_SCRIPT_URI") or self.settings.step_script_uri
        recipe = variables.get("PREPFLOW_RECIPE_URI") or self.settings.recipe_uri
        image = variables.get("PROCESSING_IMAGE_URI") or self.settings.processing_image_uri
        if not script and not image:
            self.problem(
                "step",
                "no script and no prepflow image: the prebuilt scikit-learn image cannot run "
                "the built-in step",
                "set PREPFLOW_STEP_SCRIPT_URI to a script in the model-artifacts bucket, or "
                "PROCESSING_IMAGE_URI to the deployment's ECR image",
            )
            return
        for what, uri in (("script", script), ("recipe", recipe)):
            if not uri:
                continue
            bucket, key = parse_s3_uri(uri)
            try:
                self.client("s3").head_object(Bucket=bucket, Key=key)
            except ClientError as error:
                self.problem(
                    "step",
                    f"{what} {uri}: {_code(error)}",
                    f"upload the {what} there, or fix PREPFLOW_"
                    f"{'STEP_SCRIPT' if what == 'script' else 'RECIPE'}_URI",
                )
                return
        chosen = f"script {script}" if script else f"built-in step in {image}"
        self.ok("step", chosen + (f" with recipe {recipe}" if recipe and not script else ""))


def check_deployment(settings: Settings, client: Callable[[str], Any]) -> list[Check]:
    """Run every check; ``client(service)`` returns a boto3 client."""
    return _Doctor(settings, client).run()


def _matches_object_created(pattern: Any, bucket: str) -> bool:
    if not isinstance(pattern, dict):
        return False
    text = json.dumps(pattern)
    return "aws.s3" in text and "Object Created" in text and bucket in text


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _code(error: ClientError) -> str:
    details = error.response.get("Error", {})
    return f"{details.get('Code', 'error')}: {details.get('Message', str(error))}"
