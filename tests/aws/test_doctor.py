"""``prepflow doctor --target aws`` against a deployment built in moto (in-process)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import boto3
import pytest

from prepflow.aws.doctor import check_deployment
from prepflow.settings import load_settings
from tests.aws.conftest import REGION

PREFIX = "doctor-demo"
SCRIPT_KEY = "scripts/preprocessing_script.py"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


# moto stores a bucket's EventBridgeConfiguration but leaves it out of
# GetBucketNotificationConfiguration, where S3 returns it; this set plays that part.
EVENTBRIDGE_BUCKETS: set[str] = set()


class S3Client:
    """moto's S3 client, whose GetBucketNotificationConfiguration returns what S3 returns."""

    def __init__(self) -> None:
        self.real = boto3.client("s3", region_name=REGION)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def get_bucket_notification_configuration(self, Bucket: str) -> dict[str, Any]:
        answer = dict(self.real.get_bucket_notification_configuration(Bucket=Bucket))
        if Bucket in EVENTBRIDGE_BUCKETS:
            answer["EventBridgeConfiguration"] = {}
        return answer


def client(service: str) -> Any:
    if service == "s3":
        return S3Client()
    return boto3.client(service, region_name=REGION)


def function_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handle(event, context):\n    return None\n")
    return buffer.getvalue()


@pytest.fixture
def deployment(moto_in_process) -> dict[str, Any]:
    """A complete deployment: buckets, EventBridge wiring, table, function, role, script."""
    settings = load_settings(app_prefix=PREFIX, region=REGION)
    s3 = client("s3")
    for bucket in vars(settings.buckets).values():
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    raw = settings.buckets.raw
    s3.put_bucket_notification_configuration(
        Bucket=raw, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    EVENTBRIDGE_BUCKETS.clear()
    EVENTBRIDGE_BUCKETS.add(raw)

    queue_arn = client("sqs").get_queue_attributes(
        QueueUrl=client("sqs").create_queue(QueueName="trigger")["QueueUrl"],
        AttributeNames=["QueueArn"],
    )["Attributes"]["QueueArn"]
    events = client("events")
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [raw]}, "object": {"key": [{"prefix": "input/"}]}},
    }
    events.put_rule(Name="raw-object-created", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="raw-object-created", Targets=[{"Id": "queue", "Arn": queue_arn}])

    client("dynamodb").create_table(
        TableName=settings.table_name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    iam = client("iam")
    role_arn = iam.create_role(
        RoleName="prepflow-processing", AssumeRolePolicyDocument=json.dumps(TRUST)
    )["Role"]["Arn"]
    lambda_role = iam.create_role(
        RoleName="prepflow-trigger",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]

    s3.put_object(Bucket=settings.buckets.model_artifacts, Key=SCRIPT_KEY, Body=b"print(1)\n")
    variables = {
        "APP_PREFIX": PREFIX,
        "PROCESSING_INSTANCE_TYPE": "ml.m5.xlarge",
        "PROCESSING_INSTANCE_COUNT": "1",
        "SKLEARN_VERSION": "1.2-1",
        "SAGEMAKER_ROLE_ARN": role_arn,
        "LOG_LEVEL": "INFO",
        "PREPFLOW_JOBS_TABLE": settings.table_name,
        "PREPFLOW_STEP_SCRIPT_URI": f"s3://{settings.buckets.model_artifacts}/{SCRIPT_KEY}",
    }
    client("lambda").create_function(
        FunctionName=settings.trigger_function,
        Runtime="python3.13",
        Role=lambda_role,
        Handler="handler.handle",
        Code={"ZipFile": function_zip()},
        Environment={"Variables": variables},
    )
    return {"settings": settings, "variables": variables, "role_arn": role_arn}


def statuses(checks) -> dict[str, str]:
    return {check.name: check.status for check in checks}


def test_complete_deployment_passes(deployment):
    checks = check_deployment(deployment["settings"], client)

    assert statuses(checks) == {
        "credentials": "ok",
        "buckets": "ok",
        "trigger": "ok",
        "job table": "ok",
        "function": "ok",
        "role": "ok",
        "step": "ok",
    }
    step = next(check for check in checks if check.name == "step")
    assert SCRIPT_KEY in step.detail


def test_missing_eventbridge_notification(deployment):
    client("s3").put_bucket_notification_configuration(
        Bucket=deployment["settings"].buckets.raw, NotificationConfiguration={}
    )
    EVENTBRIDGE_BUCKETS.clear()

    checks = {check.name: check for check in check_deployment(deployment["settings"], client)}

    assert checks["trigger"].status == "problem"
    assert "EventBridge" in checks["trigger"].detail
    assert checks["trigger"].fix


def test_rule_without_target(deployment):
    client("events").remove_targets(Rule="raw-object-created", Ids=["queue"])

    checks = {check.name: check for check in check_deployment(deployment["settings"], client)}

    assert checks["trigger"].status == "problem"
    assert "no EventBridge rule" in checks["trigger"].detail


def test_missing_function_variables(deployment):
    variables = dict(deployment["variables"])
    del variables["SAGEMAKER_ROLE_ARN"]
    del variables["PREPFLOW_JOBS_TABLE"]
    client("lambda").update_function_configuration(
        FunctionName=deployment["settings"].trigger_function,
        Environment={"Variables": variables},
    )

    checks = {check.name: check for check in check_deployment(deployment["settings"], client)}

    assert checks["function"].status == "problem"
    assert "SAGEMAKER_ROLE_ARN" in checks["function"].detail
    assert "PREPFLOW_JOBS_TABLE" in checks["function"].detail
    assert checks["role"].status == "skipped"


def test_role_not_trusting_sagemaker(deployment):
    client("iam").update_assume_role_policy(
        RoleName="prepflow-processing",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )

    checks = {check.name: check for check in check_deployment(deployment["settings"], client)}

    assert checks["role"].status == "problem"
    assert "sagemaker.amazonaws.com" in checks["role"].fix


def test_missing_script(deployment):
    client("s3").delete_object(
        Bucket=deployment["settings"].buckets.model_artifacts, Key=SCRIPT_KEY
    )

    checks = {check.name: check for check in check_deployment(deployment["settings"], client)}

    assert checks["step"].status == "problem"
    assert SCRIPT_KEY in checks["step"].detail
    assert "PREPFLOW_STEP_SCRIPT_URI" in checks["step"].fix


def test_missing_table_and_buckets(deployment):
    settings = deployment["settings"]
    client("dynamodb").delete_table(TableName=settings.table_name)
    client("s3").delete_bucket(Bucket=settings.buckets.feature_store)

    checks = {check.name: check for check in check_deployment(settings, client)}

    assert checks["job table"].status == "problem"
    assert settings.table_name in checks["job table"].detail
    assert checks["buckets"].status == "problem"
    assert settings.buckets.feature_store in checks["buckets"].detail
