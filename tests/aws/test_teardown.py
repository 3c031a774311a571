"""prepflow.aws.teardown: emptying buckets on moto, stopping jobs through botocore's Stubber.

moto's SageMaker marks every job Completed at once and stops any job, so the job tests give
SageMaker's responses with the Stubber instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from prepflow.aws.teardown import MAX_DELETE_BATCH, empty_bucket, stop_running_jobs
from prepflow.errors import JobError, StorageError
from tests.aws.conftest import ACCOUNT, REGION

LOCATION = {"LocationConstraint": REGION}


def versions_in(s3: Any, bucket: str) -> int:
    """Count the object versions and delete markers in ``bucket``, across every page."""
    total = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        total += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
    return total


def record_delete_batches(s3: Any) -> list[int]:
    """Record the number of keys in each DeleteObjects request that ``s3`` sends."""
    sizes: list[int] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["Delete"]["Objects"]))

    s3.meta.events.register("provide-client-params.s3.DeleteObjects", record)
    return sizes


@pytest.mark.usefixtures("moto_in_process")
def test_empty_versioned_bucket_across_pages() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    bucket, other = "pf-teardown-raw-data-bucket", "pf-teardown-other-bucket"
    for name in (bucket, other):
        s3.create_bucket(Bucket=name, CreateBucketConfiguration=LOCATION)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for number in range(1000):
        s3.put_object(Bucket=bucket, Key=f"input/part-{number:05d}.csv", Body=b"a\n1\n")
    for revision in range(3):
        s3.put_object(Bucket=bucket, Key="input/edited.csv", Body=f"v{revision}".encode())
    s3.put_object(Bucket=bucket, Key="input/deleted.csv", Body=b"gone")
    s3.delete_object(Bucket=bucket, Key="input/deleted.csv")
    s3.delete_object(Bucket=bucket, Key="input/edited.csv")
    s3.put_object(Bucket=other, Key="keep.csv", Body=b"keep")
    expected = versions_in(s3, bucket)
    batches = record_delete_batches(s3)

    deleted = empty_bucket(s3, bucket)

    # 1,000 objects, 3 versions of one more, 1 deleted object, and 2 delete markers.
    assert expected == 1006
    assert deleted == expected
    assert versions_in(s3, bucket) == 0
    assert len(batches) >= 2
    assert max(batches) <= MAX_DELETE_BATCH
    assert sum(batches) == expected
    assert s3.get_object(Bucket=other, Key="keep.csv")["Body"].read() == b"keep"


@pytest.mark.usefixtures("moto_in_process")
def test_empty_unversioned_bucket() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    bucket = "pf-teardown-processed-data-bucket"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration=LOCATION)
    for number in range(5):
        s3.put_object(Bucket=bucket, Key=f"output/job-{number}/data.csv", Body=b"x")

    deleted = empty_bucket(s3, bucket)

    assert deleted == 5
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.usefixtures("moto_in_process")
def test_empty_missing_bucket_returns_none() -> None:
    s3 = boto3.client("s3", region_name=REGION)

    assert empty_bucket(s3, "pf-teardown-never-created") is None


def test_empty_bucket_reports_refused_deletes() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    bucket = "pf-teardown-locked-bucket"
    stubber = Stubber(s3)
    stubber.add_response(
        "list_object_versions",
        {
            "IsTruncated": False,
            "Versions": [{"Key": "locked.csv", "VersionId": "v1"}],
        },
        {"Bucket": bucket, "MaxKeys": 1000},
    )
    stubber.add_response(
        "delete_objects",
        {"Errors": [{"Key": "locked.csv", "VersionId": "v1", "Code": "AccessDenied"}]},
        {
            "Bucket": bucket,
            "Delete": {"Objects": [{"Key": "locked.csv", "VersionId": "v1"}], "Quiet": True},
        },
    )

    with stubber, pytest.raises(StorageError) as raised:
        empty_bucket(s3, bucket)

    assert "'locked.csv'" in str(raised.value)
    assert "AccessDenied" in str(raised.value)
    stubber.assert_no_pending_responses()


def summary(name: str, status: str = "InProgress") -> dict[str, Any]:
    return {
        "ProcessingJobName": name,
        "ProcessingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job/{name}",
        "CreationTime": datetime(2025, 1, 1, tzinfo=UTC),
        "ProcessingJobStatus": status,
    }


def list_params(token: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "NameContains": "prepflow",
        "StatusEquals": "InProgress",
        "MaxResults": 100,
    }
    if token:
        params["NextToken"] = token
    return params


def test_stop_only_prefixed_running_jobs() -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(sagemaker)
    first_page = [
        summary("prepflow-a1"),
        summary("other-prepflow-b2"),
        summary("prepflowx-c3"),
        summary("prepflow-done", status="Completed"),
    ]
    stubber.add_response(
        "list_processing_jobs",
        {"ProcessingJobSummaries": first_page, "NextToken": "page-2"},
        list_params(),
    )
    stubber.add_response("stop_processing_job", {}, {"ProcessingJobName": "prepflow-a1"})
    stubber.add_response(
        "list_processing_jobs",
        {"ProcessingJobSummaries": [summary("prepflow-d4")]},
        list_params("page-2"),
    )
    stubber.add_response("stop_processing_job", {}, {"ProcessingJobName": "prepflow-d4"})

    with stubber:
        result = stop_running_jobs(sagemaker, "prepflow")

    assert result.stopped == ["prepflow-a1", "prepflow-d4"]
    assert result.not_stopped == {}
    stubber.assert_no_pending_responses()


def test_stop_tolerates_already_stopping_job() -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(sagemaker)
    stubber.add_response(
        "list_processing_jobs",
        {"ProcessingJobSummaries": [summary("prepflow-e5"), summary("prepflow-f6")]},
        list_params(),
    )
    stubber.add_client_error(
        "stop_processing_job",
        service_error_code="ValidationException",
        service_message="The job is in status Stopping and cannot be stopped.",
        expected_params={"ProcessingJobName": "prepflow-e5"},
    )
    stubber.add_response("stop_processing_job", {}, {"ProcessingJobName": "prepflow-f6"})

    with stubber:
        result = stop_running_jobs(sagemaker, "prepflow")

    assert result.stopped == ["prepflow-f6"]
    assert result.not_stopped == {
        "prepflow-e5": "The job is in status Stopping and cannot be stopped."
    }
    stubber.assert_no_pending_responses()


def test_stop_raises_on_access_denied() -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(sagemaker)
    stubber.add_response(
        "list_processing_jobs",
        {"ProcessingJobSummaries": [summary("prepflow-g7")]},
        list_params(),
    )
    stubber.add_client_error(
        "stop_processing_job",
        service_error_code="AccessDeniedException",
        service_message="not authorized to perform sagemaker:StopProcessingJob",
        expected_params={"ProcessingJobName": "prepflow-g7"},
    )

    with stubber, pytest.raises(JobError) as raised:
        stop_running_jobs(sagemaker, "prepflow")

    assert "'prepflow-g7'" in str(raised.value)
    assert "not authorized" in str(raised.value)


def test_stop_raises_when_listing_fails() -> None:
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(sagemaker)
    stubber.add_client_error(
        "list_processing_jobs",
        service_error_code="AccessDeniedException",
        service_message="not authorized to perform sagemaker:ListProcessingJobs",
        expected_params=list_params(),
    )

    with stubber, pytest.raises(JobError) as raised:
        stop_running_jobs(sagemaker, "prepflow")

    assert "ListProcessingJobs failed" in str(raised.value)
