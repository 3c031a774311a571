"""The trigger function in per-batch mode, on moto's S3, DynamoDB and SageMaker.

An SQS batch of EventBridge "Object Created" events, as the deployment delivers them, starts
one processing job whose manifest lists exactly the batch's objects. Redelivered objects are
never put into a second job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from prepflow.aws.clients import aws_clients
from prepflow.aws.dynamodb import table_definition
from prepflow.aws.handlers import Runtime, build_runtime, handle_trigger
from prepflow.errors import TriggerFailedError
from prepflow.storage.base import parse_s3_uri
from tests.aws.conftest import ACCOUNT, REGION
from tests.aws.test_handlers import ARTIFACTS, CSV, LOGS_BUCKET, PROCESSED, RAW, make_settings


@pytest.fixture
def runtime(tmp_path: Path, moto_in_process: None) -> Iterator[Runtime]:
    settings = make_settings(
        tmp_path,
        step_script_uri=f"s3://{ARTIFACTS}/scripts/preprocessing_script.py",
        batch_window_seconds=5,
    )
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (RAW, PROCESSED, ARTIFACTS, LOGS_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    boto3.client("dynamodb", region_name=REGION).create_table(
        **table_definition(settings.table_name)
    )
    yield build_runtime(settings, aws_clients(settings))


def upload(keys: list[str]) -> list[dict[str, Any]]:
    """Upload each key; return the EventBridge event S3 sends for it."""
    s3 = boto3.client("s3", region_name=REGION)
    events = []
    for index, key in enumerate(keys):
        response = s3.put_object(Bucket=RAW, Key=key, Body=CSV)
        events.append(
            {
                "version": "0",
                "id": f"00000000-0000-4000-8000-{index:012d}",
                "detail-type": "Object Created",
                "source": "aws.s3",
                "account": ACCOUNT,
                "time": "2024-06-05T08:31:00Z",
                "region": REGION,
                "resources": [f"arn:aws:s3:::{RAW}"],
                "detail": {
                    "version": "0",
                    "bucket": {"name": RAW},
                    "object": {
                        "key": key,
                        "size": len(CSV),
                        "etag": response["ETag"].strip('"'),
                        "sequencer": f"0066B0C1D2E3F4{index:04X}",
                    },
                    "request-id": f"REQ{index:06d}",
                    "requester": ACCOUNT,
                    "reason": "PutObject",
                },
            }
        )
    return events


def sqs_batch(bodies: list[dict[str, Any] | str]) -> dict[str, Any]:
    records = []
    for body in bodies:
        text = body if isinstance(body, str) else json.dumps(body)
        # One message per object, with a message id derived from it, as in a redelivery.
        message_id = "msg-" + hashlib.sha256(text.encode()).hexdigest()[:12]
        records.append(
            {
                "messageId": message_id,
                "receiptHandle": f"receipt-{message_id}",
                "body": text,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "0" * 32,
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:raw-input-events",
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def processing_jobs() -> list[str]:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    summaries = sagemaker.list_processing_jobs()["ProcessingJobSummaries"]
    return sorted(job["ProcessingJobName"] for job in summaries)


def manifest_of(job_name: str) -> tuple[str, list[str]]:
    """Read the job's manifest from moto's S3, through the job's own request."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    described = sagemaker.describe_processing_job(ProcessingJobName=job_name)
    manifest_uri = described["ProcessingInputs"][0]["S3Input"]["S3Uri"]
    bucket, key = parse_s3_uri(manifest_uri)
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=bucket, Key=key)["Body"]
    entries = json.loads(body.read())
    return entries[0]["prefix"], entries[1:]


KEYS = [f"input/2024-06-05/part-{index:02d}.csv" for index in range(10)]


def test_sqs_batch_starts_one_job(runtime):
    events = upload(KEYS)

    response = handle_trigger(sqs_batch(events), runtime)

    assert response == {"batchItemFailures": []}
    (name,) = processing_jobs()
    prefix, relative = manifest_of(name)
    assert prefix == f"s3://{RAW}/input/2024-06-05/"
    assert sorted(relative) == [key.rsplit("/", 1)[1] for key in KEYS]
    record = runtime.jobs.get(name)
    assert record.submitted_at is not None
    assert sorted(record.inputs) == [f"s3://{RAW}/{key}" for key in KEYS]


def test_sqs_batch_again_starts_nothing(runtime):
    batch = sqs_batch(upload(KEYS))
    handle_trigger(batch, runtime)
    (name,) = processing_jobs()

    response = handle_trigger(batch, runtime)

    assert response == {"batchItemFailures": []}
    assert processing_jobs() == [name]
    for key in KEYS:
        claim = f"s3://{RAW}/{key}#sequencer="
        owners = {
            r.job_name
            for r in runtime.jobs.list_jobs()
            if any(c.startswith(claim) for c in r.claim_keys)
        }
        assert owners == {name}


def test_sqs_batch_overlap_takes_new_objects(runtime):
    first_keys = [f"input/day/early-{index}.csv" for index in range(3)]
    later_keys = [f"input/day/late-{index}.csv" for index in range(7)]
    events = upload(first_keys + later_keys)
    handle_trigger(sqs_batch(events[:3]), runtime)
    (first,) = processing_jobs()

    response = handle_trigger(sqs_batch(events), runtime)

    assert response == {"batchItemFailures": []}
    (second,) = [name for name in processing_jobs() if name != first]
    _, relative = manifest_of(second)
    assert sorted(relative) == sorted(key.rsplit("/", 1)[1] for key in later_keys)
    _, earlier = manifest_of(first)
    assert sorted(earlier) == sorted(key.rsplit("/", 1)[1] for key in first_keys)


def test_sqs_batch_reports_missing_object(runtime):
    events = upload(KEYS[:3])
    boto3.client("s3", region_name=REGION).delete_object(Bucket=RAW, Key=KEYS[1])
    batch = sqs_batch(events)

    response = handle_trigger(batch, runtime)

    missing = batch["Records"][1]["messageId"]
    assert response == {"batchItemFailures": [{"itemIdentifier": missing}]}
    (name,) = processing_jobs()
    assert sorted(manifest_of(name)[1]) == ["part-00.csv", "part-02.csv"]


def test_sqs_batch_all_failed_raises(runtime):
    with pytest.raises(TriggerFailedError):
        handle_trigger(sqs_batch(["not json", "{also not json"]), runtime)

    assert processing_jobs() == []
