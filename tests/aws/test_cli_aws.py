"""``prepflow ... --target aws`` as a user runs it, against a deployment on moto's server.

The deployment's wiring is moto's own (S3 -> EventBridge -> SQS); a thread of this test plays
the Lambda event source mapping: it reads the queue and calls the real trigger handler with
the real adapters. The CLI runs as a separate process whose only way to AWS is
``AWS_ENDPOINT_URL``, pointed at moto's server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from prepflow.aws.clients import AwsClients
from prepflow.aws.dynamodb import table_definition
from prepflow.aws.handlers import build_runtime, handle_trigger
from prepflow.settings import Settings, load_settings
from tests.aws.conftest import REGION, ROLE_ARN

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/prepflow-processing:latest"


@dataclass
class Deployment:
    settings: Settings
    environment: dict[str, str]
    client: Any
    handled: list[dict[str, Any]]


def deployment_environment(settings: Settings, endpoint: str) -> dict[str, str]:
    return {
        "APP_PREFIX": settings.app_prefix,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "SAGEMAKER_ROLE_ARN": ROLE_ARN,
        "PROCESSING_IMAGE_URI": IMAGE,
    }


@pytest.fixture
def deployment(moto_server: str, server_client) -> Iterator[Deployment]:
    """Buckets, the EventBridge rule into a queue, the job table, and a trigger poller."""
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        app_prefix=prefix,
        region=REGION,
        sagemaker_role_arn=ROLE_ARN,
        processing_image_uri=IMAGE,
    )
    s3 = server_client("s3")
    for bucket in vars(settings.buckets).values():
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    raw = settings.buckets.raw
    s3.put_bucket_versioning(Bucket=raw, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_notification_configuration(
        Bucket=raw, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    sqs = server_client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{prefix}-trigger")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events = server_client("events")
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [raw]}},
    }
    events.put_rule(Name=f"{prefix}-object-created", EventPattern=json.dumps(pattern))
    events.put_targets(Rule=f"{prefix}-object-created", Targets=[{"Id": "queue", "Arn": queue_arn}])
    server_client("dynamodb").create_table(**table_definition(settings.table_name))

    runtime = build_runtime(
        settings, AwsClients(boto3.session.Session(region_name=REGION), moto_server)
    )
    handled: list[dict[str, Any]] = []
    stop = threading.Event()

    def event_source_mapping() -> None:
        # What Lambda's SQS event source does: receive a batch, invoke, delete what succeeded.
        while not stop.is_set():
            messages = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if not messages:
                continue
            batch = {
                "Records": [
                    {
                        "messageId": m["MessageId"],
                        "receiptHandle": m["ReceiptHandle"],
                        "body": m["Body"],
                        "attributes": {},
                        "messageAttributes": {},
                        "eventSource": "aws:sqs",
                        "eventSourceARN": queue_arn,
                        "awsRegion": REGION,
                    }
                    for m in messages
                ]
            }
            response = handle_trigger(batch, runtime)
            handled.append(response)
            failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
            for message in messages:
                if message["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    poller = threading.Thread(target=event_source_mapping, daemon=True)
    poller.start()
    try:
        yield Deployment(
            settings, deployment_environment(settings, moto_server), server_client, handled
        )
    finally:
        stop.set()
        poller.join(timeout=10)


def prepflow(deployment: Deployment, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "PREPFLOW_"))
    }
    environment.update(deployment.environment)
    environment["PREPFLOW_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "prepflow", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def run_one(deployment: Deployment, tmp_path: Path, name: str, text: str) -> dict[str, Any]:
    """Run ``prepflow run --target aws --json`` on one new file; return its job."""
    data = tmp_path / name
    data.write_text(text)
    done = prepflow(deployment, "run", "--target", "aws", "--json", str(data), home=tmp_path)
    assert done.returncode == 0, done.stderr
    (job,) = json.loads(done.stdout)
    return dict(job)


def test_run_target_aws_follows_job(deployment: Deployment, tmp_path: Path) -> None:
    job = run_one(deployment, tmp_path, "a b.csv", "id,value\n1,2\n")

    assert job["status"] == "Completed"
    assert job["inputs"] == [f"s3://{deployment.settings.buckets.raw}/input/a b.csv"]
    assert job["job_name"].startswith("prepflow-a-b-")
    manifest_key = f"manifests/{job['job_name']}.manifest"
    manifest = json.loads(
        deployment.client("s3")
        .get_object(Bucket=deployment.settings.buckets.model_artifacts, Key=manifest_key)["Body"]
        .read()
    )
    assert manifest[1:] == ["a b.csv"]


def test_jobs_list_and_describe_target_aws(deployment: Deployment, tmp_path: Path) -> None:
    job = run_one(deployment, tmp_path, "orders.csv", "id\n1\n")

    listed = prepflow(deployment, "jobs", "list", "--target", "aws", "--json", home=tmp_path)
    described = prepflow(
        deployment, "jobs", "describe", job["job_name"], "--target", "aws", "--json", home=tmp_path
    )

    assert listed.returncode == 0, listed.stderr
    assert [item["job_name"] for item in json.loads(listed.stdout)] == [job["job_name"]]
    assert described.returncode == 0, described.stderr
    details = json.loads(described.stdout)
    assert details["status"] == "Completed"
    assert details["request"]["AppSpecification"]["ImageUri"] == IMAGE


def test_run_target_aws_rejects_local_options(deployment: Deployment, tmp_path: Path) -> None:
    data = tmp_path / "x.csv"
    data.write_text("a\n1\n")
    script = tmp_path / "step.py"
    script.write_text("print(1)\n")

    done = prepflow(
        deployment, "run", "--target", "aws", "--script", str(script), str(data), home=tmp_path
    )

    assert done.returncode == 2
    assert "--target aws" in done.stderr


def test_describe_unknown_job_target_aws(deployment: Deployment, tmp_path: Path) -> None:
    done = prepflow(
        deployment, "jobs", "describe", "prepflow-nothing-0123456789ab", "--target", "aws",
        home=tmp_path,
    )  # fmt: skip

    assert done.returncode == 3
    assert "not found" in done.stderr


def test_jobs_logs_and_stop_target_aws(deployment: Deployment, tmp_path: Path) -> None:
    name = run_one(deployment, tmp_path, "logs.csv", "id\n1\n")["job_name"]
    logs = deployment.client("logs")
    group = "/aws/sagemaker/ProcessingJobs"
    if group not in [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]:
        logs.create_log_group(logGroupName=group)
    now_ms = int(time.time() * 1000)
    for host, lines in (("algo-1", ["reading input", "done"]), ("algo-2", ["idle host"])):
        stream = f"{name}/{host}-1733389200"
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": now_ms + i, "message": line} for i, line in enumerate(lines)],
        )

    printed = prepflow(deployment, "jobs", "logs", name, "--target", "aws", home=tmp_path)
    stopped = prepflow(deployment, "jobs", "stop", name, "--target", "aws", home=tmp_path)

    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == ["reading input", "done", "idle host"]
    # moto completes every job at once, so there is nothing left to stop.
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"{name} already ended: Completed"


def test_run_target_aws_without_trigger_stops_at_timeout(
    moto_server: str, server_client, tmp_path: Path
) -> None:
    # Buckets and table, but nothing starts jobs: --timeout bounds the wait for the job.
    settings = load_settings(
        app_prefix=f"bare-{uuid.uuid4().hex[:8]}", region=REGION, sagemaker_role_arn=ROLE_ARN
    )
    s3 = server_client("s3")
    for bucket in vars(settings.buckets).values():
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    server_client("dynamodb").create_table(**table_definition(settings.table_name))
    bare = Deployment(settings, deployment_environment(settings, moto_server), server_client, [])
    data = tmp_path / "lonely.csv"
    data.write_text("id\n1\n")

    done = prepflow(bare, "run", "--target", "aws", "--timeout", "1", str(data), home=tmp_path)

    assert done.returncode == 1
    assert "no job started for" in done.stderr
    assert "doctor --target aws" in done.stderr


def test_missing_job_table_exits_3(moto_server: str, server_client, tmp_path: Path) -> None:
    # Nothing deployed under this prefix: the job table is missing, so the command names it.
    settings = load_settings(
        app_prefix=f"absent-{uuid.uuid4().hex[:8]}", region=REGION, sagemaker_role_arn=ROLE_ARN
    )
    absent = Deployment(settings, deployment_environment(settings, moto_server), server_client, [])

    done = prepflow(absent, "jobs", "list", "--target", "aws", home=tmp_path)

    assert done.returncode == 3, done.stderr
    assert f"table {settings.table_name!r} not found" in done.stderr
