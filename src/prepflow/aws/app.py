"""The command line's view of a deployment on AWS: its buckets, job table, SageMaker and logs.

The CLI reads job records from DynamoDB, and the state of jobs that have not ended from
SageMaker. It never writes a job's state itself: the job-state Lambda does, and publishes
the notification when it does, so a record the CLI moved to ``Completed`` would never be
announced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from prepflow import naming
from prepflow.aws.logs import LOG_GROUP
from prepflow.errors import JobNotFoundError, PrepflowError, StorageError
from prepflow.jobs.backend import JobBackend
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord, JobStore, output_files
from prepflow.settings import Settings
from prepflow.storage.base import ObjectInfo, ObjectStore, parse_s3_uri

logger = logging.getLogger(__name__)

# DescribeProcessingJob allows a few calls a second per account; a job takes minutes.
POLL_SECONDS = 5.0
# Newest records read when looking for the job of an upload without a version id.
RECENT_RECORDS = 200
# How far this machine's clock may be ahead of AWS's when matching a job to an upload.
CLOCK_SKEW = timedelta(seconds=30)


@dataclass
class AwsApp:
    settings: Settings
    store: ObjectStore
    jobs: JobStore
    backend: JobBackend
    logs: Any  # a boto3 CloudWatch Logs client

    def view(self, job_name: str) -> JobRecord:
        """Return the job's record with SageMaker's current state if it has not ended.

        The record in DynamoDB is brought up to date by the job-state Lambda; until its
        event arrives, SageMaker's state is newer. Nothing is written.
        """
        record = self.jobs.get(job_name)
        if record.status.is_terminal or record.submitted_at is None:
            return record
        try:
            description = self.backend.describe(job_name)
        except JobNotFoundError:
            return record
        if description.status == record.status:
            return record
        return record.model_copy(
            update={
                "status": description.status,
                "failure_reason": description.failure_reason,
                "exit_message": description.exit_message,
                "started_at": description.start_time or record.started_at,
                "ended_at": description.end_time,
            }
        )

    def wait(
        self,
        job_names: list[str],
        *,
        timeout: float | None = None,
        poll: float = POLL_SECONDS,
        on_poll: Callable[[list[str]], object] | None = None,
    ) -> list[JobRecord]:
        """Poll until every job has ended; raise TimeoutError after ``timeout`` seconds.

        ``on_poll`` receives the names of the jobs still running after each poll.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            records = [self.view(name) for name in job_names]
            pending = [r.job_name for r in records if not r.status.is_terminal]
            if on_poll is not None:
                on_poll(pending)
            if not pending:
                return records
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"jobs still running after {timeout:.0f} s: {pending}")
            time.sleep(poll)

    def job_for_upload(
        self, info: ObjectInfo, uploaded_at: datetime, *, timeout: float, poll: float = 2.0
    ) -> JobRecord:
        """Wait for the job the deployment starts for an uploaded object, and return it.

        With a version id (the raw bucket is versioned), the job name follows from it exactly.
        Without one, the newest records are searched for a job that read this content.
        """
        expected = None
        if info.version_id:
            key = naming.object_idempotency_key(
                info.bucket, info.key, version_id=info.version_id, sequencer=None
            )
            expected = naming.job_name(self.settings.job_name_prefix, key, info.key)
        deadline = time.monotonic() + timeout
        while True:
            record = (
                self.jobs.find(expected)
                if expected
                else self._recent_job_reading(info, uploaded_at)
            )
            if record is not None:
                return record
            if time.monotonic() > deadline:
                raise PrepflowError(
                    f"no job started for {info.uri} within {timeout:.0f} s of the upload; "
                    "check the trigger wiring with 'prepflow doctor --target aws'"
                )
            time.sleep(poll)

    def _recent_job_reading(self, info: ObjectInfo, since: datetime) -> JobRecord | None:
        """Return the newest job created after the upload that read this object's content.

        Without a version id an upload has no exact job name: the job must read the same
        URI with the same ETag, and be created after the upload (less CLOCK_SKEW).
        """
        earliest = since - CLOCK_SKEW
        for record in self.jobs.list_jobs(limit=RECENT_RECORDS):
            if record.created_at < earliest:
                return None
            if _plain_etag(record.input_etags.get(info.uri)) == _plain_etag(info.etag):
                return record
        return None

    def output_files(self, record: JobRecord) -> list[str]:
        """Return the S3 URIs of the objects a completed job wrote."""
        return output_files(self.store, record)

    def side_output(self, record: JobRecord, output_name: str, file_name: str) -> dict[str, str]:
        """Return the URI of a file in one of the built-in step's side outputs, if it exists."""
        uri = _output_file_uri(record, output_name, file_name)
        if uri is None or record.status != JobStatus.COMPLETED:
            return {}
        bucket, key = parse_s3_uri(uri)
        try:
            self.store.head_object(bucket, key)
        except StorageError:
            return {}
        return {"uri": uri}

    def log_lines(self, job_name: str) -> Iterator[str]:
        """Yield every line of the job's CloudWatch log streams (one per host), oldest first."""
        try:
            streams = self._log_streams(job_name)
            for stream in streams:
                token: str | None = None
                while True:
                    arguments: dict[str, Any] = {
                        "logGroupName": LOG_GROUP,
                        "logStreamName": stream,
                        "startFromHead": True,
                    }
                    if token:
                        arguments["nextToken"] = token
                    page = self.logs.get_log_events(**arguments)
                    for event in page.get("events", []):
                        yield event["message"]
                    if page.get("nextForwardToken") in (None, token):
                        break
                    token = page["nextForwardToken"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return
            raise PrepflowError(
                f"cannot read the logs of {job_name} from CloudWatch Logs group {LOG_GROUP}: "
                f"{error}; check that your credentials may call logs:GetLogEvents"
            ) from error
        except BotoCoreError as error:
            raise PrepflowError(f"cannot read the logs of {job_name}: {error}") from error

    def _log_streams(self, job_name: str) -> list[str]:
        streams: list[str] = []
        paginator = self.logs.get_paginator("describe_log_streams")
        for page in paginator.paginate(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job_name}/"):
            streams += [stream["logStreamName"] for stream in page.get("logStreams", [])]
        return sorted(streams)


def _plain_etag(etag: str | None) -> str | None:
    return None if etag is None else etag.strip('"').lower()


def _output_file_uri(record: JobRecord, output_name: str, file_name: str) -> str | None:
    outputs = record.request.get("ProcessingOutputConfig", {}).get("Outputs", [])
    for output in outputs:
        if output.get("OutputName") == output_name:
            return str(output["S3Output"]["S3Uri"]).rstrip("/") + "/" + file_name
    return None


def build_aws_app(settings: Settings, clients: Any = None) -> AwsApp:
    """Wire the AWS adapters for the command line; ``clients`` defaults to the settings'."""
    from prepflow.aws.clients import aws_clients
    from prepflow.aws.dynamodb import DynamoJobStore
    from prepflow.aws.s3 import S3ObjectStore
    from prepflow.aws.sagemaker import SageMakerBackend

    clients = clients or aws_clients(settings)
    return AwsApp(
        settings=settings,
        store=S3ObjectStore(clients.client("s3")),
        jobs=DynamoJobStore(clients.client("dynamodb"), settings.table_name),
        backend=SageMakerBackend(clients.client("sagemaker")),
        logs=clients.client("logs"),
    )
