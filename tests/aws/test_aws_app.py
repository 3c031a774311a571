"""The command line's view of a deployment (aws/app.py), on local ports and moto's Logs."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from prepflow import naming
from prepflow.aws.app import LOG_GROUP, AwsApp
from prepflow.errors import JobNotFoundError, PrepflowError
from prepflow.jobs.backend import JobBackend
from prepflow.jobs.spec import JobDescription, JobStatus, ProcessingJobSpec
from prepflow.jobstore.base import JobRecord
from prepflow.jobstore.sqlite import SqliteJobStore
from prepflow.settings import load_settings
from prepflow.storage.local import LocalObjectStore
from tests.aws.conftest import REGION

NOW = datetime.now(UTC)


class ReportingBackend(JobBackend):
    """A backend that reports preset states and counts DescribeProcessingJob calls."""

    def __init__(self) -> None:
        self.states: dict[str, JobDescription] = {}
        self.describes = 0
        self.stopped: list[str] = []

    def submit(self, spec: ProcessingJobSpec) -> None:
        raise AssertionError("the command line never submits on AWS")

    def describe(self, job_name: str) -> JobDescription:
        self.describes += 1
        if job_name not in self.states:
            raise JobNotFoundError(job_name)
        return self.states[job_name]

    def stop(self, job_name: str) -> None:
        self.stopped.append(job_name)


@pytest.fixture
def app(tmp_path: Path) -> AwsApp:
    settings = load_settings(home=str(tmp_path / "home"), region=REGION)
    return AwsApp(
        settings=settings,
        store=LocalObjectStore(tmp_path / "store", region=REGION),
        jobs=SqliteJobStore(tmp_path / "jobs.db"),
        backend=ReportingBackend(),
        logs=boto3.client("logs", region_name=REGION),
    )


def recorded(app: AwsApp, name: str, **fields) -> JobRecord:
    record = JobRecord(job_name=name, idempotency_key=f"key-{name}", **fields)
    return app.jobs.create(record)[0]


def test_view_merges_sagemaker_state_without_writing(app):
    record = recorded(app, "prepflow-a-1", submitted_at=NOW)
    app.backend.states["prepflow-a-1"] = JobDescription(
        job_name="prepflow-a-1",
        status=JobStatus.FAILED,
        failure_reason="AlgorithmError: exit code: 1",
        end_time=NOW + timedelta(minutes=3),
    )

    seen = app.view("prepflow-a-1")

    assert seen.status == JobStatus.FAILED
    assert seen.failure_reason == "AlgorithmError: exit code: 1"
    stored = app.jobs.get("prepflow-a-1")
    assert stored.status == JobStatus.IN_PROGRESS
    assert stored.version == record.version


def test_view_of_ended_job_asks_nothing(app):
    recorded(app, "prepflow-b-1", submitted_at=NOW, status=JobStatus.COMPLETED)

    assert app.view("prepflow-b-1").status == JobStatus.COMPLETED
    assert app.backend.describes == 0


def test_view_of_unsubmitted_job_asks_nothing(app):
    recorded(app, "prepflow-c-1", waiting_reason="waiting for capacity")

    assert app.view("prepflow-c-1").status == JobStatus.IN_PROGRESS
    assert app.backend.describes == 0


def test_wait_returns_when_all_ended(app):
    recorded(app, "prepflow-d-1", submitted_at=NOW)
    app.backend.states["prepflow-d-1"] = JobDescription(
        job_name="prepflow-d-1", status=JobStatus.COMPLETED
    )

    (record,) = app.wait(["prepflow-d-1"], timeout=5, poll=0)

    assert record.status == JobStatus.COMPLETED


def test_wait_times_out_naming_jobs(app):
    recorded(app, "prepflow-e-1", submitted_at=NOW)
    app.backend.states["prepflow-e-1"] = JobDescription(
        job_name="prepflow-e-1", status=JobStatus.IN_PROGRESS
    )

    with pytest.raises(TimeoutError, match="prepflow-e-1"):
        app.wait(["prepflow-e-1"], timeout=0, poll=0)


def test_job_for_versioned_upload_by_name(app, tmp_path):
    bucket = app.settings.buckets.raw
    info = app.store.put_object(bucket, "input/orders.csv", b"a\n1\n")
    versioned = dataclasses.replace(info, version_id="v123")
    key = naming.object_idempotency_key(
        bucket, "input/orders.csv", version_id="v123", sequencer=None
    )
    name = naming.job_name(app.settings.job_name_prefix, key, "input/orders.csv")
    recorded(app, name, inputs=[info.uri])

    assert app.job_for_upload(versioned, NOW, timeout=0, poll=0).job_name == name


def test_job_for_unversioned_upload_by_input(app):
    bucket = app.settings.buckets.raw
    info = app.store.put_object(bucket, "input/orders.csv", b"a\n1\n")
    etags = {info.uri: info.etag}
    old = NOW - timedelta(hours=2)
    recorded(app, "prepflow-orders-old", inputs=[info.uri], input_etags=etags, created_at=old)
    other = f"s3://{bucket}/input/other.csv"
    recorded(app, "prepflow-other-new", inputs=[other], input_etags={other: info.etag})
    recorded(app, "prepflow-orders-new", inputs=[info.uri], input_etags=etags)

    found = app.job_for_upload(info, NOW, timeout=0, poll=0)

    assert found.job_name == "prepflow-orders-new"


def test_earlier_job_of_same_key_not_taken(app):
    # A job of the same key a minute before the upload, or of other content, is not this
    # upload's job, even when the bucket has no versions to tell them apart.
    bucket = app.settings.buckets.raw
    info = app.store.put_object(bucket, "input/orders.csv", b"new content\n")
    earlier = NOW - timedelta(minutes=1)
    recorded(
        app,
        "prepflow-orders-earlier",
        inputs=[info.uri],
        input_etags={info.uri: info.etag},
        created_at=earlier,
    )
    recorded(app, "prepflow-orders-other", inputs=[info.uri], input_etags={info.uri: '"0" '})

    with pytest.raises(PrepflowError, match="no job started"):
        app.job_for_upload(info, NOW, timeout=0, poll=0)


def test_no_job_for_upload_names_doctor(app):
    info = app.store.put_object(app.settings.buckets.raw, "input/lost.csv", b"a\n1\n")
    recorded(app, "prepflow-lost-old", inputs=[info.uri], created_at=NOW - timedelta(days=1))

    with pytest.raises(PrepflowError, match="doctor --target aws"):
        app.job_for_upload(info, NOW, timeout=0, poll=0)


def test_log_lines_of_every_host_in_order(app, moto_in_process):
    logs = boto3.client("logs", region_name=REGION)
    app.logs = logs
    logs.create_log_group(logGroupName=LOG_GROUP)
    now_ms = int(time.time() * 1000)
    for stream, lines in {
        "prepflow-f-1/algo-1-1733389200": ["start 1", "done 1"],
        "prepflow-f-1/algo-2-1733389200": ["start 2"],
        "prepflow-f-10/algo-1-1733389200": ["another job"],
    }.items():
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        logs.put_log_events(
            logGroupName=LOG_GROUP,
            logStreamName=stream,
            # CloudWatch keeps no events older than 14 days, so they are stamped now.
            logEvents=[{"timestamp": now_ms + i, "message": line} for i, line in enumerate(lines)],
        )

    assert list(app.log_lines("prepflow-f-1")) == ["start 1", "done 1", "start 2"]


def test_log_lines_without_group(app, moto_in_process):
    app.logs = boto3.client("logs", region_name=REGION)

    assert list(app.log_lines("prepflow-g-1")) == []


def test_side_output_only_when_present(app):
    bucket = app.settings.buckets.logs
    request = {
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "report",
                    "S3Output": {"S3Uri": f"s3://{bucket}/reports/prepflow-h-1/"},
                }
            ]
        }
    }
    record = recorded(app, "prepflow-h-1", status=JobStatus.COMPLETED, request=request)

    assert app.side_output(record, "report", "report.html") == {}
    app.store.put_object(bucket, "reports/prepflow-h-1/report.html", b"<html></html>")
    assert app.side_output(record, "report", "report.html") == {
        "uri": f"s3://{bucket}/reports/prepflow-h-1/report.html"
    }
    assert app.side_output(record, "rejected", "rejected.csv") == {}
